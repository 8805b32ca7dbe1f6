//! `[[server.tls]]` (the listener's certificates) and `[services.tls]`
//! (TLS to a service's endpoints): files read and checked here, so a bad
//! certificate is a config error with its line, not a failed handshake.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use toml::Spanned;

use super::file::{ServerFile, ServiceFile};
use super::validate::{ConfigError, Ctx};
use crate::tls::upstream::{SourceField, UpstreamTls, UpstreamTlsSource};
use crate::tls::{CertSource, CertStore, NamePattern};
use crate::upstream::UpstreamProtocol;

/// The listener's certificate store, when `[[server.tls]]` is given.
pub(super) fn server(cx: &Ctx<'_>, s: &ServerFile) -> Result<Option<Arc<CertStore>>, ConfigError> {
    let interval = &s.tls_reload_interval_seconds;
    if *interval.get_ref() == 0 {
        return Err(cx.spanned(
            interval,
            "server.tls_reload_interval_seconds",
            "must be at least 1",
        ));
    }
    if s.tls.is_empty() {
        return Ok(None);
    }
    // Name key (with its kind) → the entry that claimed it first.
    let mut claimed: HashMap<NamePattern, usize> = HashMap::new();
    let mut sources = Vec::with_capacity(s.tls.len());
    for (i, t) in s.tls.iter().enumerate() {
        let field = |f: &str| format!("server.tls[{i}].{f}");
        if t.server_names.get_ref().is_empty() {
            return Err(cx.spanned(
                &t.server_names,
                field("server_names"),
                "must name at least one host (the SNI names this certificate serves)",
            ));
        }
        let mut names = Vec::with_capacity(t.server_names.get_ref().len());
        for (j, n) in t.server_names.get_ref().iter().enumerate() {
            let f = field(&format!("server_names[{j}]"));
            let pattern = NamePattern::parse(n.get_ref()).map_err(|why| cx.spanned(n, &f, why))?;
            if let Some(&k) = claimed.get(&pattern) {
                return Err(cx.spanned(
                    n,
                    f,
                    format!(
                        "{:?} is already served by server.tls[{k}]: each name picks one certificate",
                        n.get_ref()
                    ),
                ));
            }
            claimed.insert(pattern.clone(), i);
            names.push(pattern);
        }
        sources.push(CertSource {
            cert: super::auth::resolve(cx, t.cert.get_ref()),
            key: super::auth::resolve(cx, t.key.get_ref()),
            server_names: names,
        });
    }
    let store =
        CertStore::load(sources, Duration::from_secs(*interval.get_ref())).map_err(|(i, e)| {
            let t = &s.tls[i];
            let (span, f) = if e.is_key() {
                (&t.key, "key")
            } else {
                (&t.cert, "cert")
            };
            cx.spanned(span, format!("server.tls[{i}].{f}"), e.to_string())
        })?;
    Ok(Some(Arc::new(store)))
}

/// A service's upstream TLS, when `[services.tls]` is given; checks that
/// `protocol` fits (`"h2"` needs TLS, `"h2c"` is cleartext).
pub(super) fn service(
    cx: &Ctx<'_>,
    i: usize,
    svc: &ServiceFile,
    protocol: UpstreamProtocol,
) -> Result<Option<Arc<UpstreamTls>>, ConfigError> {
    let field = |f: &str| format!("services[{i}].{f}");
    let h2_over_tls = svc.protocol == super::file::ProtocolFile::H2;
    let Some(t) = &svc.tls else {
        if h2_over_tls {
            return Err(cx.spanned(
                &svc.name,
                field("protocol"),
                "protocol = \"h2\" is HTTP/2 over TLS and needs a [services.tls] table (\"h2c\" is cleartext HTTP/2)",
            ));
        }
        return Ok(None);
    };
    if svc.protocol == super::file::ProtocolFile::H2c {
        return Err(cx.spanned(
            t,
            field("tls"),
            "protocol = \"h2c\" is cleartext HTTP/2: use protocol = \"h2\" for HTTP/2 over TLS",
        ));
    }
    let t_ref = t.get_ref();
    let server_name = match &t_ref.server_name {
        Some(n) => Some(ServerName::try_from(n.get_ref().clone()).map_err(|_| {
            cx.spanned(
                n,
                field("tls.server_name"),
                format!("{:?} is neither a host name nor an IP address", n.get_ref()),
            )
        })?),
        None => None,
    };
    match (&t_ref.cert, &t_ref.key) {
        (Some(c), None) => {
            return Err(cx.spanned(
                c,
                field("tls.cert"),
                "a client certificate needs its key (tls.key)",
            ));
        }
        (None, Some(k)) => {
            return Err(cx.spanned(
                k,
                field("tls.key"),
                "a client key needs its certificate (tls.cert)",
            ));
        }
        _ => {}
    }
    let path =
        |p: &Option<Spanned<String>>| p.as_ref().map(|p| super::auth::resolve(cx, p.get_ref()));
    let source = UpstreamTlsSource {
        server_name,
        ca: path(&t_ref.ca),
        cert: path(&t_ref.cert),
        key: path(&t_ref.key),
    };
    let alpn: &[u8] = match protocol {
        UpstreamProtocol::H2c => b"h2",
        UpstreamProtocol::Http1 => b"http/1.1",
    };
    let tls = UpstreamTls::build(&source, alpn).map_err(|(f, e)| {
        let (span, name) = match f {
            SourceField::Ca => (t_ref.ca.as_ref(), "ca"),
            SourceField::Cert => (t_ref.cert.as_ref(), "cert"),
            SourceField::Key => (t_ref.key.as_ref(), "key"),
        };
        let span = span.map_or(t.span(), Spanned::span);
        cx.at(span, field(&format!("tls.{name}")), e.to_string())
    })?;
    Ok(Some(Arc::new(tls)))
}
