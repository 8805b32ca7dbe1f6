//! The voice relay: what a VR client's voice session may use of the
//! gateway's STUN/TURN relay.
//!
//! This release has the relay's policy parts and the start of its
//! protocol core, pure and tested on their own: the [`RelayProfile`] a
//! session runs under, the per-allocation bitrate cap ([`bitrate`]), the
//! peer policy ([`peer`]) that keeps the relay from reaching the gateway's
//! own network, STUN Binding ([`proto::stun`]), the long-term credential
//! mechanism ([`proto::authn`], [`auth`]) and TURN's allocation state
//! machine ([`proto::turn`], see `LIFECYCLE.md`). The UDP/TCP shell that
//! drives them from sockets is next (the `[relay]` config section is
//! refused until it lands; see `docs/relay-design.md`).
//!
//! ```
//! use aether_gateway::{RelaySession, RelayProfile, NatMode, RelayRegion};
//! let session = RelaySession::new(RelayProfile {
//!     nat_mode: NatMode::SymmetricNat,
//!     region: RelayRegion::Closest,
//!     max_bitrate_kbps: 64,
//! });
//! assert!(session.profile().nat_mode.needs_relay());
//! // One 20 ms Opus frame at the cap, with its RTP/SRTP overhead, passes.
//! assert!(session.admit(160 + 48, std::time::Duration::from_millis(20)));
//! ```

pub mod auth;
pub mod bitrate;
pub mod credentials;
pub mod peer;
pub mod proto;
pub mod server;

pub use server::{Relay, RelayConfig, RelayStatus};

use std::time::Duration;

use bitrate::{BitrateBucket, BitrateCap};

/// How a client reaches the internet, as its ICE gathering found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatMode {
    /// A public address: peers reach it directly.
    Open,
    /// Full-cone NAT: one mapping for every destination, open to anyone.
    FullCone,
    /// Address-restricted cone NAT: one mapping, open to hosts it sent to.
    RestrictedCone,
    /// Port-restricted cone NAT: one mapping, open to host:ports it sent to.
    PortRestrictedCone,
    /// Symmetric NAT: a new mapping per destination (mobile carriers,
    /// corporate networks). STUN's answer is useless to peers: only a relay
    /// connects it.
    SymmetricNat,
}

impl NatMode {
    /// True when peer-to-peer connectivity cannot be expected and voice
    /// must go through the relay.
    pub fn needs_relay(self) -> bool {
        matches!(self, NatMode::SymmetricNat)
    }
}

/// Which relay region a session uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RelayRegion {
    /// The region geo routing finds closest to the client.
    Closest,
    /// This region, whatever the client's location.
    Named(String),
}

/// What a voice session may use of the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayProfile {
    /// How the client is connected.
    pub nat_mode: NatMode,
    /// Where its relay runs.
    pub region: RelayRegion,
    /// Cap on the voice payload it may relay, kbps (0: none).
    pub max_bitrate_kbps: u32,
}

/// One client's voice session on the relay: its profile and the bitrate
/// bucket its allocations' relayed packets are policed by.
#[derive(Debug)]
pub struct RelaySession {
    profile: RelayProfile,
    cap: Option<BitrateCap>,
    bucket: BitrateBucket,
}

impl RelaySession {
    /// A session under `profile`.
    pub fn new(profile: RelayProfile) -> Self {
        RelaySession {
            cap: BitrateCap::new(profile.max_bitrate_kbps),
            profile,
            bucket: BitrateBucket::default(),
        }
    }

    /// Its profile.
    pub fn profile(&self) -> &RelayProfile {
        &self.profile
    }

    /// Police one relayed packet of `len` bytes at `now` (a monotonic
    /// reading): `true` to relay it, `false` to drop it.
    pub fn admit(&self, len: usize, now: Duration) -> bool {
        match &self.cap {
            None => true,
            Some(cap) => {
                let ns = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
                self.bucket.admit(cap, len, ns)
            }
        }
    }
}
