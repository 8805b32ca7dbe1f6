//! Authentication: the validated identity carried through the pipeline.
//!
//! JWT validation itself arrives with the `[auth]` section; until then every
//! route is public and requests carry no [`Token`].

/// The identity of a validated bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Token {
    /// The `sub` claim: the user.
    pub subject: String,
    /// Roles granted by the token.
    pub roles: Vec<String>,
}
