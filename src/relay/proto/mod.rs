//! The relay's protocol core: bytes and the sender's address in, bytes to
//! send back out; no sockets, no clock, no allocation on the answer path.
//! The STUN codec is `stun-types` (measured in `docs/relay-design.md`:
//! the RFC 5769 vectors pass, decoding allocates nothing).
//!
//! So far: STUN Binding (RFC 8489). TURN's allocation state machine
//! builds on it.

pub mod authn;
pub mod integrity;
pub mod stun;
pub mod turn;
