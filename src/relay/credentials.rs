//! TURN credentials handed out by the gateway to authenticated clients:
//! the TURN REST API form (`username = "<expiry>:<sub>"`, `credential =
//! base64(HMAC-SHA1(secret, username))`), with the URIs of the relay in the
//! client's closest region, shaped as WebRTC's `RTCIceServer`.
//!
//! ```
//! use aether_gateway::relay::auth::RestSecrets;
//! use aether_gateway::relay::credentials::{RelayUris, VoiceCredentials};
//! use aether_gateway::RelayRegion;
//! let issuer = VoiceCredentials::new(
//!     RestSecrets::new(b"shared-secret".to_vec(), None),
//!     600,
//!     vec![RelayUris { region: None, uris: vec!["turn:relay.example:3478?transport=udp".into()] }],
//! );
//! let relay = issuer.relay_for(&RelayRegion::Closest, None, None).unwrap();
//! let c = issuer.issue("player-1", relay, 1_800_000_000).unwrap();
//! assert_eq!(c.username, "1800000600:player-1");
//! assert_eq!(c.ttl, 600);
//! ```

use serde::Serialize;

use std::sync::Arc;

use super::RelayRegion;
use super::auth::RestSecrets;
use crate::clock::{Clock, SystemClock};
use crate::geo::{GeoRoutingPolicy, RegionId};

/// STUN's USERNAME is shorter than 513 bytes (RFC 8489 §14.3).
const MAX_USERNAME: usize = 512;

/// One relay's TURN URIs and its region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUris {
    /// Its `[geo]` region, if geo routing knows it.
    pub region: Option<String>,
    /// `turn:host:port?transport=udp`, …; [`PORT`] stands for the port
    /// the relay's listener was bound to (a configured port 0).
    pub uris: Vec<String>,
}

/// In a [`RelayUris`] URI, the relay's bound port.
pub const PORT: &str = "{port}";

/// Issues credentials for the relays of a fleet sharing one secret.
#[derive(Debug)]
pub struct VoiceCredentials {
    secrets: RestSecrets,
    ttl_seconds: u64,
    /// This gateway's relay first, then other regions' relays.
    relays: Vec<RelayUris>,
    clock: Arc<dyn Clock>,
    /// The relay listener's port, once bound (for [`PORT`]).
    port: std::sync::atomic::AtomicU16,
}

/// What `POST /api/v1/voice/credentials` answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IssuedCredentials {
    /// `<expiry-unix>:<sub>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// Seconds the credential is valid.
    pub ttl: u64,
    /// The chosen relay's URIs.
    pub uris: Vec<String>,
    /// The chosen relay's region.
    pub region: Option<String>,
    /// The same, ready for `new RTCPeerConnection({iceServers})`.
    #[serde(rename = "iceServers")]
    pub ice_servers: [IceServer; 1],
}

/// WebRTC's `RTCIceServer`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IceServer {
    /// The relay's URIs.
    pub urls: Vec<String>,
    /// The TURN username.
    pub username: String,
    /// The TURN password.
    pub credential: String,
}

/// The user name does not fit in a STUN USERNAME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the user name is too long for a TURN credential")]
pub struct UserTooLong;

impl VoiceCredentials {
    /// Credentials under `secrets`, valid `ttl_seconds`, for `relays`
    /// (this gateway's first; at least one).
    pub fn new(secrets: RestSecrets, ttl_seconds: u64, relays: Vec<RelayUris>) -> Self {
        assert!(!relays.is_empty(), "at least this gateway's relay");
        VoiceCredentials {
            secrets,
            ttl_seconds,
            relays,
            clock: Arc::new(SystemClock),
            port: std::sync::atomic::AtomicU16::new(0),
        }
    }

    /// The port the relay listener was bound to, for URIs that say [`PORT`].
    pub fn set_bound_port(&self, port: u16) {
        self.port.store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// Expiry times from `clock` (tests: a manual clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// [`VoiceCredentials::issue`] at the clock's time.
    ///
    /// # Errors
    /// [`UserTooLong`], as `issue`.
    pub fn issue_now(
        &self,
        user: &str,
        relay: &RelayUris,
    ) -> Result<IssuedCredentials, UserTooLong> {
        self.issue(user, relay, self.clock.unix_seconds())
    }

    /// Seconds a credential lives.
    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    /// The relays, this gateway's first.
    pub fn relays(&self) -> &[RelayUris] {
        &self.relays
    }

    /// The relay for a session: the named region's (`None` when no relay
    /// is there), or the one with the lowest configured latency from the
    /// client's region (`client`, located by `geo`); this gateway's relay
    /// when nothing is known or on a tie.
    pub fn relay_for(
        &self,
        region: &RelayRegion,
        geo: Option<&GeoRoutingPolicy>,
        client: Option<RegionId>,
    ) -> Option<&RelayUris> {
        match region {
            RelayRegion::Named(name) => self
                .relays
                .iter()
                .find(|r| r.region.as_deref() == Some(name.as_str())),
            RelayRegion::Closest => {
                let Some(geo) = geo else {
                    return self.relays.first();
                };
                let latency = |r: &RelayUris| {
                    r.region
                        .as_deref()
                        .and_then(|n| geo.id(n))
                        .map_or(u32::MAX, |id| geo.expected_latency_ms(client, id))
                };
                // min_by_key keeps the first of equals: this gateway's relay.
                self.relays.iter().min_by_key(|r| latency(r))
            }
        }
    }

    /// A credential for `user` on `relay`, made at `now_unix`.
    ///
    /// # Errors
    /// [`UserTooLong`] when `<expiry>:<user>` exceeds STUN's 512 bytes.
    pub fn issue(
        &self,
        user: &str,
        relay: &RelayUris,
        now_unix: u64,
    ) -> Result<IssuedCredentials, UserTooLong> {
        let (username, credential) = self.secrets.issue(user, now_unix, self.ttl_seconds);
        if username.len() > MAX_USERNAME {
            return Err(UserTooLong);
        }
        let port = self
            .port
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string();
        let uris: Vec<String> = relay.uris.iter().map(|u| u.replace(PORT, &port)).collect();
        Ok(IssuedCredentials {
            ice_servers: [IceServer {
                urls: uris.clone(),
                username: username.clone(),
                credential: credential.clone(),
            }],
            username,
            credential,
            ttl: self.ttl_seconds,
            uris,
            region: relay.region.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::auth::{parse_rest_username, rest_password};

    fn issuer() -> VoiceCredentials {
        VoiceCredentials::new(
            RestSecrets::new(b"s3cret".to_vec(), None),
            600,
            vec![
                RelayUris {
                    region: Some("us-east".into()),
                    uris: vec!["turn:us.example:3478".into()],
                },
                RelayUris {
                    region: Some("eu-west".into()),
                    uris: vec!["turn:eu.example:3478".into()],
                },
            ],
        )
    }

    #[test]
    fn issued_credentials_verify_and_expire_after_the_ttl() {
        let i = issuer();
        let c = i.issue("player-7", &i.relays()[0], 1_000).unwrap();
        assert_eq!(c.username, "1600:player-7");
        assert_eq!(c.credential, rest_password(b"s3cret", "1600:player-7"));
        assert_eq!(c.ice_servers[0].urls, vec!["turn:us.example:3478"]);
        assert_eq!(
            parse_rest_username(&c.username, 1_600).unwrap().user,
            "player-7"
        );
        assert!(parse_rest_username(&c.username, 1_601).is_err());
        let long = "x".repeat(600);
        assert_eq!(i.issue(&long, &i.relays()[0], 1_000), Err(UserTooLong));
    }

    #[test]
    fn the_closest_relay_by_the_geo_table_or_a_named_one() {
        let i = issuer();
        let mut b = GeoRoutingPolicy::builder();
        b.latency("eu-west", "eu-west", 10).unwrap();
        b.latency("eu-west", "us-east", 90).unwrap();
        b.latency("us-east", "us-east", 10).unwrap();
        b.latency("us-east", "eu-west", 90).unwrap();
        let geo = b.build();
        let eu = geo.id("eu-west");
        let pick = |r: &RelayRegion, c| i.relay_for(r, Some(&geo), c).map(|r| r.region.clone());
        assert_eq!(
            pick(&RelayRegion::Closest, eu),
            Some(Some("eu-west".into()))
        );
        assert_eq!(
            pick(&RelayRegion::Closest, geo.id("us-east")),
            Some(Some("us-east".into()))
        );
        assert_eq!(
            pick(&RelayRegion::Named("eu-west".into()), None),
            Some(Some("eu-west".into()))
        );
        assert_eq!(pick(&RelayRegion::Named("ap-south".into()), None), None);
        // No geo: this gateway's relay.
        assert_eq!(
            i.relay_for(&RelayRegion::Closest, None, eu).unwrap().region,
            Some("us-east".into())
        );
    }
}
