//! `[auth]` → an [`AuthMiddleware`] with its keys loaded, every problem
//! reported with the file, line and field.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::file::{AuthFile, KeyFile};
use super::validate::{ConfigError, Ctx};
use crate::auth::keys::{self, KeySet, VerifyKey, parse_algorithm};
use crate::auth::{AuthMiddleware, AuthValidationPolicy, jwks};

/// Names of the headers that carry identity upstream.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Carries `sub`.
    pub user: HeaderName,
    /// Carries the roles, comma-separated.
    pub roles: HeaderName,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            user: HeaderName::from_static("x-aether-user"),
            roles: HeaderName::from_static("x-aether-roles"),
        }
    }
}

pub(super) fn resolve(cx: &Ctx<'_>, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        return p;
    }
    cx.file.parent().map_or(p.clone(), |dir| dir.join(&p))
}

fn header_name(cx: &Ctx<'_>, s: &Spanned<String>, field: &str) -> Result<HeaderName, ConfigError> {
    let name = HeaderName::from_bytes(s.get_ref().as_bytes()).map_err(|_| {
        cx.spanned(
            s,
            field,
            format!("{:?} is not a valid header name", s.get_ref()),
        )
    })?;
    if crate::dispatch::headers::is_reserved(&name) {
        return Err(cx.spanned(
            s,
            field,
            format!("{name} is a header the gateway manages itself"),
        ));
    }
    Ok(name)
}

fn supported_names() -> String {
    let names: Vec<&str> = keys::SUPPORTED
        .iter()
        .map(|a| keys::algorithm_name(*a))
        .collect();
    names.join(", ")
}

/// Build the middleware and identity header names from `[auth]`.
pub(super) fn build(
    cx: &Ctx<'_>,
    a: &Spanned<AuthFile>,
    warnings: &mut Vec<String>,
) -> Result<(AuthMiddleware, IdentityHeaders), ConfigError> {
    let span = a.span();
    let a = a.get_ref();
    let algorithms: Vec<Algorithm> = match &a.algorithms {
        None => keys::SUPPORTED.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for (i, name) in list.iter().enumerate() {
                let field = format!("auth.algorithms[{i}]");
                let alg = parse_algorithm(name.get_ref()).ok_or_else(|| {
                    let why = if name.get_ref().eq_ignore_ascii_case("none") {
                        "unsigned tokens (alg none) are never accepted".to_owned()
                    } else {
                        format!(
                            "unsupported algorithm {:?} (one of {})",
                            name.get_ref(),
                            supported_names()
                        )
                    };
                    cx.spanned(name, field, why)
                })?;
                out.push(alg);
            }
            if out.is_empty() {
                return Err(cx.at(
                    span.clone(),
                    "auth.algorithms",
                    "must list at least one algorithm",
                ));
            }
            out
        }
    };
    if a.issuer.get_ref().is_empty() {
        return Err(cx.spanned(&a.issuer, "auth.issuer", "must not be empty"));
    }

    let mut set = KeySet::new();
    if let Some(f) = &a.jwks_file {
        let path = resolve(cx, f.get_ref());
        let doc = super::files::read_capped(&path, super::files::MAX_PEM_BYTES).map_err(|e| {
            cx.spanned(
                f,
                "auth.jwks_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let parsed = keys::parse_jwks(&doc, &algorithms, true)
            .map_err(|e| cx.spanned(f, "auth.jwks_file", format!("{}: {e}", path.display())))?;
        for s in parsed.skipped {
            warnings.push(format!("auth.jwks_file {}: {s}: skipped", path.display()));
        }
        if parsed.keys.is_empty() {
            return Err(cx.spanned(
                f,
                "auth.jwks_file",
                format!("{} has no usable key", path.display()),
            ));
        }
        for k in parsed.keys {
            set.push(k);
        }
    }
    for (i, k) in a.keys.iter().enumerate() {
        set.push(static_key(cx, i, k, &algorithms)?);
    }

    let remote = match &a.jwks_url {
        None => None,
        Some(u) => {
            let uri: http::Uri = u.get_ref().parse().map_err(|_| {
                cx.spanned(
                    u,
                    "auth.jwks_url",
                    format!("{} is not a URL", super::validate::url_shown(u.get_ref())),
                )
            })?;
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") => {
                    let host = uri.host().unwrap_or_default();
                    let loopback = host == "localhost"
                        || host
                            .trim_matches(['[', ']'])
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback());
                    if !loopback {
                        let shown = uri.to_string();
                        let shown = crate::admin::redact_url(&shown).unwrap_or(shown);
                        warnings.push(format!(
                            "auth.jwks_url {shown} is plain http: whoever sits on the path can hand the gateway their own keys; use https"
                        ));
                    }
                }
                _ => {
                    return Err(cx.spanned(
                        u,
                        "auth.jwks_url",
                        "must be an http:// or https:// URL",
                    ));
                }
            }
            let min = *a.jwks_refresh_min_seconds.get_ref();
            let max = *a.jwks_refresh_max_seconds.get_ref();
            if min == 0 {
                return Err(cx.spanned(
                    &a.jwks_refresh_min_seconds,
                    "auth.jwks_refresh_min_seconds",
                    "must be at least 1",
                ));
            }
            if *a.jwks_fetch_timeout_ms.get_ref() == 0 {
                return Err(cx.spanned(
                    &a.jwks_fetch_timeout_ms,
                    "auth.jwks_fetch_timeout_ms",
                    "must be at least 1",
                ));
            }
            if max < min {
                return Err(cx.spanned(
                    &a.jwks_refresh_max_seconds,
                    "auth.jwks_refresh_max_seconds",
                    "must not be less than jwks_refresh_min_seconds",
                ));
            }
            Some(jwks::RemoteConfig {
                url: uri,
                min_refresh: Duration::from_secs(min),
                max_refresh: Duration::from_secs(max),
                fetch_timeout: Duration::from_millis(*a.jwks_fetch_timeout_ms.get_ref()),
            })
        }
    };
    if set.is_empty() && remote.is_none() {
        return Err(cx.at(
            span,
            "auth",
            "no keys: give jwks_file, jwks_url or [[auth.keys]]",
        ));
    }
    if *a.max_token_bytes.get_ref() < 64 {
        return Err(cx.spanned(
            &a.max_token_bytes,
            "auth.max_token_bytes",
            "must be at least 64",
        ));
    }
    if *a.token_cache_size.get_ref() == 0 {
        return Err(cx.spanned(
            &a.token_cache_size,
            "auth.token_cache_size",
            "must be at least 1",
        ));
    }

    let mut mw = AuthMiddleware::new(AuthValidationPolicy {
        issuer: a.issuer.get_ref().clone(),
        required_claims: a.required_claims.clone(),
    })
    .with_audiences(a.audiences.iter().cloned())
    .with_algorithms(algorithms)
    .with_leeway_seconds(a.leeway_seconds)
    .with_max_token_bytes(*a.max_token_bytes.get_ref())
    .with_roles_claim(a.roles_claim.clone())
    .with_cache_size(*a.token_cache_size.get_ref())
    .with_clock(Arc::clone(&cx.clock))
    .with_keys(&set);
    if let Some(r) = remote {
        mw = mw.with_remote_jwks(r);
    }
    let headers = IdentityHeaders {
        user: header_name(cx, &a.user_header, "auth.user_header")?,
        roles: header_name(cx, &a.roles_header, "auth.roles_header")?,
    };
    if headers.user == headers.roles {
        return Err(cx.spanned(
            &a.roles_header,
            "auth.roles_header",
            format!(
                "{} is already user_header: the roles would overwrite the user",
                headers.roles
            ),
        ));
    }
    Ok((mw, headers))
}

fn static_key(
    cx: &Ctx<'_>,
    i: usize,
    k: &KeyFile,
    allowed: &[Algorithm],
) -> Result<VerifyKey, ConfigError> {
    let field = |f: &str| format!("auth.keys[{i}].{f}");
    let name = k.algorithm.get_ref();
    let alg = parse_algorithm(name).ok_or_else(|| {
        cx.spanned(
            &k.algorithm,
            field("algorithm"),
            format!(
                "unsupported algorithm {name:?} (one of {})",
                supported_names()
            ),
        )
    })?;
    if !allowed.contains(&alg) {
        let listed: Vec<&str> = allowed.iter().map(|a| keys::algorithm_name(*a)).collect();
        return Err(cx.spanned(
            &k.algorithm,
            field("algorithm"),
            format!(
                "{name} is not in auth.algorithms ({}): add it there to accept its tokens",
                listed.join(", ")
            ),
        ));
    }
    let is_hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    let sources = [
        k.pem_file.is_some(),
        k.secret_env.is_some(),
        k.secret_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(cx.spanned(
            &k.algorithm,
            format!("auth.keys[{i}]"),
            "give exactly one of pem_file, secret_env, secret_file",
        ));
    }
    let kid = k.kid.clone();
    if let Some(p) = &k.pem_file {
        if is_hmac {
            return Err(cx.spanned(
                p,
                field("pem_file"),
                "HMAC algorithms take secret_env or secret_file",
            ));
        }
        let path = resolve(cx, p.get_ref());
        let pem = super::files::read_capped(&path, super::files::MAX_PEM_BYTES).map_err(|e| {
            cx.spanned(
                p,
                field("pem_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        return VerifyKey::pem(&pem, alg, kid)
            .map_err(|e| cx.spanned(p, field("pem_file"), format!("{}: {e}", path.display())));
    }
    let (secret, at, name) = if let Some(env) = &k.secret_env {
        let v = std::env::var_os(env.get_ref()).ok_or_else(|| {
            cx.spanned(
                env,
                field("secret_env"),
                format!(
                    "environment variable {} is not set",
                    super::validate::env_name_shown(env.get_ref())
                ),
            )
        })?;
        (v.into_encoded_bytes(), env, "secret_env")
    } else {
        let f = k.secret_file.as_ref().expect("one source is set");
        let path = resolve(cx, f.get_ref());
        let mut bytes =
            super::files::read_capped(&path, super::files::MAX_SECRET_BYTES).map_err(|e| {
                cx.spanned(
                    f,
                    field("secret_file"),
                    format!(
                        "cannot read {}: {e}",
                        super::validate::secret_path_shown(f.get_ref(), &path)
                    ),
                )
            })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        (bytes, f, "secret_file")
    };
    if !is_hmac {
        return Err(cx.spanned(
            at,
            field(name),
            "a secret is for HS256/HS384/HS512; asymmetric algorithms take pem_file",
        ));
    }
    VerifyKey::hmac(&secret, alg, kid).map_err(|e| cx.spanned(at, field(name), e.to_string()))
}

/// The `Arc` the snapshot holds.
pub(super) fn shared(mw: AuthMiddleware) -> Arc<AuthMiddleware> {
    Arc::new(mw)
}
