//! `[relay]`: from the file to the relay's [`RelayConfig`] and the
//! credentials the gateway hands out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use toml::Spanned;

use super::file::RelayFile;
use super::validate::{ConfigError, Ctx};
use crate::relay::RelayConfig;
use crate::relay::auth::RestSecrets;
use crate::relay::bitrate::BitrateCap;
use crate::relay::credentials::{RelayUris, VoiceCredentials};
use crate::relay::peer::PeerPolicy;
use crate::relay::proto::turn::TurnConfig;

/// What `[relay]` builds.
pub(super) struct Built {
    pub relay: RelayConfig,
    /// With `[auth]`: the issuer behind the credentials route.
    pub credentials: Option<VoiceCredentials>,
    /// The credentials route's path and roles.
    pub path: Spanned<String>,
    pub roles: Vec<String>,
}

const F: &str = "relay";

fn field(f: &str) -> String {
    format!("{F}.{f}")
}

fn secret(
    cx: &Ctx<'_>,
    env: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
    env_name: &str,
    file_name: &str,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let bytes = match (env, file) {
        (Some(e), Some(_)) => {
            return Err(cx.spanned(
                e,
                field(env_name),
                format!("give {env_name} or {file_name}, not both"),
            ));
        }
        (Some(e), None) => std::env::var_os(e.get_ref())
            .ok_or_else(|| {
                cx.spanned(
                    e,
                    field(env_name),
                    format!(
                        "environment variable {} is not set",
                        super::validate::env_name_shown(e.get_ref())
                    ),
                )
            })?
            .into_encoded_bytes(),
        (None, Some(f)) => {
            let path = super::auth::resolve(cx, f.get_ref());
            let mut b =
                super::files::read_capped(&path, super::files::MAX_SECRET_BYTES).map_err(|e| {
                    cx.spanned(
                        f,
                        field(file_name),
                        format!(
                            "cannot read {}: {e}",
                            super::validate::secret_path_shown(f.get_ref(), &path)
                        ),
                    )
                })?;
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            b
        }
        (None, None) => return Ok(None),
    };
    let at = env.or(file).expect("one is set");
    if bytes.len() < 16 {
        return Err(cx.spanned(
            at,
            field(if env.is_some() { env_name } else { file_name }),
            format!(
                "the secret is {} bytes: use at least 16 random bytes",
                bytes.len()
            ),
        ));
    }
    Ok(Some(bytes))
}

fn ip(cx: &Ctx<'_>, s: &Spanned<String>, f: &str) -> Result<IpAddr, ConfigError> {
    s.get_ref().parse().map_err(|_| {
        cx.spanned(
            s,
            field(f),
            format!("{:?} is not an IP address", s.get_ref()),
        )
    })
}

fn ports(cx: &Ctx<'_>, s: &Spanned<String>) -> Result<(u16, u16), ConfigError> {
    let bad = |m: String| cx.spanned(s, field("relay_ports"), m);
    let (lo, hi) = s.get_ref().split_once('-').ok_or_else(|| {
        bad(format!(
            "{:?} is not a range like \"49152-65535\"",
            s.get_ref()
        ))
    })?;
    let parse = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (Some(lo), Some(hi)) = (parse(lo), parse(hi)) else {
        return Err(bad(format!(
            "{:?}: ports are 1-65535, written \"lo-hi\"",
            s.get_ref()
        )));
    };
    if lo > hi {
        return Err(bad(format!("{lo} is above {hi}")));
    }
    Ok((lo, hi))
}

fn uri(cx: &Ctx<'_>, s: &Spanned<String>, f: String) -> Result<String, ConfigError> {
    let u = s.get_ref();
    let ok = ["turn:", "turns:", "stun:", "stuns:"]
        .iter()
        .any(|p| u.starts_with(p) && u.len() > p.len())
        && !u.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(cx.spanned(
            s,
            f,
            format!("{u:?} is not a TURN/STUN URI (turn:host:port?transport=udp)"),
        ));
    }
    Ok(u.clone())
}

/// Build `[relay]`. `auth` says whether `[auth]` is configured (the
/// credentials route needs it); `geo` the geo policy, for region names.
pub(super) fn build(
    cx: &Ctx<'_>,
    r: &Spanned<RelayFile>,
    auth: bool,
    geo: Option<&crate::geo::GeoRoutingPolicy>,
    warnings: &mut Vec<String>,
) -> Result<Built, ConfigError> {
    let f = r.get_ref();
    let listen: SocketAddr = f.listen.get_ref().parse().map_err(|_| {
        cx.spanned(
            &f.listen,
            field("listen"),
            format!("{:?} is not an ip:port address", f.listen.get_ref()),
        )
    })?;
    let realm = f.realm.get_ref();
    if realm.is_empty() || realm.len() > 127 || realm.chars().any(char::is_control) {
        return Err(cx.spanned(
            &f.realm,
            field("realm"),
            "the realm is 1 to 127 characters, no control characters",
        ));
    }
    let Some(addr) = &f.relay_address else {
        return Err(cx.at(
            r.span(),
            field("relay_address"),
            "missing: the address clients and peers reach relayed ports on (put in XOR-RELAYED-ADDRESS)",
        ));
    };
    let relay_ip = ip(cx, addr, "relay_address")?;
    if relay_ip.is_unspecified() {
        return Err(cx.spanned(
            addr,
            field("relay_address"),
            "must be the address peers reach, not a wildcard",
        ));
    }
    let relay_bind = match &f.relay_bind_address {
        Some(b) => ip(cx, b, "relay_bind_address")?,
        None => relay_ip,
    };
    let relay_ip_v6 = match &f.relay_address_v6 {
        Some(a) => {
            let v6 = ip(cx, a, "relay_address_v6")?;
            if !v6.is_ipv6() || v6.is_unspecified() || relay_ip.is_ipv6() {
                return Err(cx.spanned(
                    a,
                    field("relay_address_v6"),
                    "an IPv6 address (not a wildcard), beside an IPv4 relay_address",
                ));
            }
            Some(v6)
        }
        None => None,
    };
    let relay_bind_v6 = match &f.relay_bind_address_v6 {
        Some(b) => Some(ip(cx, b, "relay_bind_address_v6")?),
        None => relay_ip_v6,
    };
    let ports = ports(cx, &f.relay_ports)?;
    let span = u32::from(ports.1 - ports.0) + 1;
    if span < 64 {
        warnings.push(format!(
            "[relay] relay_ports {:?} has {span} port(s): each allocation takes one, so at most {span} allocations (508 beyond), fewer if other programs hold some",
            f.relay_ports.get_ref()
        ));
    }
    if (ports.0..=ports.1).contains(&listen.port()) {
        warnings.push(format!(
            "[relay] relay_ports {:?} holds the relay's own listener port {}: that port is skipped",
            f.relay_ports.get_ref(),
            listen.port()
        ));
    }

    let current = secret(
        cx,
        f.secret_env.as_ref(),
        f.secret_file.as_ref(),
        "secret_env",
        "secret_file",
    )?;
    let previous = secret(
        cx,
        f.previous_secret_env.as_ref(),
        f.previous_secret_file.as_ref(),
        "previous_secret_env",
        "previous_secret_file",
    )?;
    if current.is_none()
        && let Some(p) = f
            .previous_secret_env
            .as_ref()
            .or(f.previous_secret_file.as_ref())
    {
        return Err(cx.spanned(
            p,
            field("previous_secret_env"),
            "a previous secret needs a current one (secret_env or secret_file)",
        ));
    }
    let secrets = current.map(|c| RestSecrets::new(c, previous));

    let mut users = HashMap::new();
    for (i, u) in f.users.iter().enumerate() {
        let at = |x: &str| format!("{F}.users[{i}].{x}");
        let name = u.name.get_ref();
        if name.is_empty()
            || name.len() > 128
            || name.contains(':')
            || name.chars().any(char::is_control)
        {
            return Err(cx.spanned(
                &u.name,
                at("name"),
                "1 to 128 characters, no ':' (it would read as a REST credential) and no control characters",
            ));
        }
        let password = match (&u.password, &u.password_env) {
            (Some(p), None) => p.get_ref().clone(),
            (None, Some(e)) => std::env::var(e.get_ref()).map_err(|_| {
                cx.spanned(
                    e,
                    at("password_env"),
                    format!(
                        "environment variable {} is not set",
                        super::validate::env_name_shown(e.get_ref())
                    ),
                )
            })?,
            _ => {
                return Err(cx.spanned(
                    &u.name,
                    at("password"),
                    "give exactly one of password, password_env",
                ));
            }
        };
        if users.insert(name.clone(), password).is_some() {
            return Err(cx.spanned(&u.name, at("name"), format!("duplicate user {name:?}")));
        }
    }
    if secrets.is_none() && users.is_empty() {
        return Err(cx.at(
            r.span(),
            field("secret_env"),
            "no credentials: set secret_env (or secret_file) for gateway-issued credentials, or [[relay.users]]",
        ));
    }
    if !users.is_empty() {
        warnings.push(format!(
            "[relay] has {} static user(s): fine for testing, but their passwords never expire",
            users.len()
        ));
    }

    let ttl = *f.credential_ttl_seconds.get_ref();
    if !(60..=86_400).contains(&ttl) {
        return Err(cx.spanned(
            &f.credential_ttl_seconds,
            field("credential_ttl_seconds"),
            "between 60 and 86400 seconds",
        ));
    }
    for (name, v) in [
        ("max_allocations_per_user", &f.max_allocations_per_user),
        ("max_allocations", &f.max_allocations),
        (
            "max_permissions_per_allocation",
            &f.max_permissions_per_allocation,
        ),
        (
            "max_channels_per_allocation",
            &f.max_channels_per_allocation,
        ),
        ("max_tcp_connections", &f.max_tcp_connections),
        (
            "max_tcp_connections_per_address",
            &f.max_tcp_connections_per_address,
        ),
    ] {
        if *v.get_ref() == 0 {
            return Err(cx.spanned(v, field(name), "must be at least 1"));
        }
    }
    if *f.max_channels_per_allocation.get_ref() > 0x4000 {
        return Err(cx.spanned(
            &f.max_channels_per_allocation,
            field("max_channels_per_allocation"),
            "at most 16384 (the channel numbers 0x4000-0x7FFF)",
        ));
    }
    if *f.challenges_per_second.get_ref() == 0 || *f.challenge_burst.get_ref() == 0 {
        let s = if *f.challenges_per_second.get_ref() == 0 {
            (&f.challenges_per_second, "challenges_per_second")
        } else {
            (&f.challenge_burst, "challenge_burst")
        };
        return Err(cx.spanned(s.0, field(s.1), "must be at least 1"));
    }
    let nonce = *f.nonce_lifetime_seconds.get_ref();
    if !(30..=3600).contains(&nonce) {
        return Err(cx.spanned(
            &f.nonce_lifetime_seconds,
            field("nonce_lifetime_seconds"),
            "between 30 and 3600 seconds",
        ));
    }
    let kbps = *f.max_bitrate_kbps.get_ref();
    if kbps > 100_000 {
        return Err(cx.spanned(
            &f.max_bitrate_kbps,
            field("max_bitrate_kbps"),
            "at most 100000 (0 for no cap)",
        ));
    }

    let allowed = f
        .allowed_peers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            super::validate::parse_cidr(s.get_ref()).ok_or_else(|| {
                cx.spanned(
                    s,
                    format!("{F}.allowed_peers[{i}]"),
                    format!("{:?} is not a CIDR or IP address", s.get_ref()),
                )
            })
        })
        .collect::<Result<Vec<IpNet>, _>>()?;
    let mut turn = TurnConfig::new(relay_ip);
    turn.relay_ip_v6 = relay_ip_v6;
    turn.max_allocations_per_user = *f.max_allocations_per_user.get_ref();
    turn.max_allocations = *f.max_allocations.get_ref();
    turn.max_permissions = *f.max_permissions_per_allocation.get_ref();
    turn.max_channels = *f.max_channels_per_allocation.get_ref();
    turn.peers = PeerPolicy::new(allowed, vec![]);
    turn.bitrate = BitrateCap::new(kbps);

    // URIs handed to clients: as configured, else this relay's address.
    let uris = if f.uris.is_empty() {
        let host = match relay_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        // Port 0 (tests): the port the listener gets, filled in at start.
        let port = match listen.port() {
            0 => crate::relay::credentials::PORT.to_owned(),
            p => p.to_string(),
        };
        let mut u = vec![format!("turn:{host}:{port}?transport=udp")];
        if f.tcp {
            u.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        u
    } else {
        f.uris
            .iter()
            .enumerate()
            .map(|(i, s)| uri(cx, s, format!("{F}.uris[{i}]")))
            .collect::<Result<_, _>>()?
    };
    let known_region = |s: &Spanned<String>, at: String| match geo {
        Some(g) if g.id(s.get_ref()).is_none() => Err(cx.spanned(
            s,
            at,
            format!(
                "unknown region {:?} (known: {})",
                s.get_ref(),
                g.regions()
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(s.get_ref().clone()),
    };
    let mut relays = vec![RelayUris {
        region: f
            .region
            .as_ref()
            .map(|s| known_region(s, field("region")))
            .transpose()?,
        uris,
    }];
    for (i, reg) in f.regions.iter().enumerate() {
        let at = |x: &str| format!("{F}.regions[{i}].{x}");
        let name = known_region(&reg.name, at("name"))?;
        if relays
            .iter()
            .any(|r| r.region.as_deref() == Some(name.as_str()))
        {
            return Err(cx.spanned(&reg.name, at("name"), format!("region {name:?} twice")));
        }
        if reg.uris.is_empty() {
            return Err(cx.spanned(&reg.name, at("uris"), "at least one URI"));
        }
        let uris = reg
            .uris
            .iter()
            .enumerate()
            .map(|(j, s)| uri(cx, s, format!("{F}.regions[{i}].uris[{j}]")))
            .collect::<Result<_, _>>()?;
        relays.push(RelayUris {
            region: Some(name),
            uris,
        });
    }
    if !f.regions.is_empty() && f.region.is_none() {
        return Err(cx.at(
            r.span(),
            field("region"),
            "missing: with [[relay.regions]], say which region this relay is in",
        ));
    }
    if geo.is_none() && (f.region.is_some() || !f.regions.is_empty()) {
        warnings.push(
            "[relay] regions without [geo]: every client gets this gateway's relay".to_owned(),
        );
    }

    let path = f.credentials_path.clone();
    if !path.get_ref().starts_with('/') || path.get_ref().contains(['{', '}', '?', '#']) {
        return Err(cx.spanned(
            &path,
            field("credentials_path"),
            "a literal path starting with '/' (no parameters, no query)",
        ));
    }
    let credentials = match (&secrets, auth) {
        (Some(s), true) => Some(
            VoiceCredentials::new(s.clone(), ttl, relays)
                .with_clock(std::sync::Arc::clone(&cx.clock)),
        ),
        (None, true) => {
            warnings.push(format!(
                "[relay] has no secret_env: {} is not served (only static users can use the relay)",
                path.get_ref()
            ));
            None
        }
        (_, false) => {
            warnings.push(format!(
                "[relay] without [auth]: {} is not served (credentials are handed out only to authenticated clients)",
                path.get_ref()
            ));
            None
        }
    };
    Ok(Built {
        relay: RelayConfig {
            listen,
            tcp: f.tcp,
            realm: realm.clone(),
            relay_bind,
            relay_bind_v6,
            ports,
            secrets,
            users,
            turn,
            nonce_lifetime_seconds: nonce,
            challenges_per_second: *f.challenges_per_second.get_ref(),
            challenge_burst: *f.challenge_burst.get_ref(),
            max_tcp_connections: *f.max_tcp_connections.get_ref(),
            max_tcp_connections_per_address: *f.max_tcp_connections_per_address.get_ref(),
            revocation_seconds: ttl,
            clock: std::sync::Arc::clone(&cx.clock),
        },
        credentials,
        path,
        roles: f
            .credentials_roles
            .iter()
            .map(|r| r.get_ref().clone())
            .collect(),
    })
}
