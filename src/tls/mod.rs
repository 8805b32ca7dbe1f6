//! TLS with rustls (aws-lc-rs provider, TLS 1.2 and 1.3 only): termination
//! on the client-facing listener, and TLS (optionally mTLS) to upstreams
//! ([`upstream`]).
//!
//! The listener's certificates live in a [`CertStore`]: the compiled
//! `[[server.tls]]` entries behind one `ArcSwap`, chosen per handshake by SNI
//! (exact names, then a `*.` wildcard for one label, then the first entry),
//! and re-read from disk by a background task ([`CertStore::watch`]). A
//! handshake reads the store with one atomic load; no lock.

pub mod upstream;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// ALPN protocols the listener offers, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read.
    #[error("cannot read certificate file {}: {source}", path.display())]
    ReadCert {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The key file cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{}: {why}", path.display())]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{}: {why}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The private key is not the certificate's.
    #[error("the private key {} does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// True when the fault is in the key file rather than the certificate
    /// file (config errors point at the `key` field then).
    pub fn is_key(&self) -> bool {
        matches!(
            self,
            TlsError::ReadKey { .. } | TlsError::BadKey { .. } | TlsError::KeyMismatch { .. }
        )
    }
}

/// The crypto provider of every TLS config the gateway builds.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.3 and 1.2; nothing older.
pub(crate) const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A `server_names` entry: an exact host name or `*.` plus a suffix (one
/// label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamePattern {
    /// `play.example`: this name only (stored in lower case).
    Exact(String),
    /// `*.play.example`: stored as `.play.example`; matches `a.play.example`,
    /// neither `play.example` nor `a.b.play.example`.
    Wildcard(String),
}

impl NamePattern {
    /// Parse a configured name.
    ///
    /// # Errors
    /// A message when `name` is neither a DNS name nor `*.` + a DNS name.
    pub fn parse(name: &str) -> Result<Self, String> {
        let lower = name.to_ascii_lowercase();
        let (base, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let valid = !base.is_empty()
            && base.len() <= 253
            && base.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "{name:?} is not a host name (letters, digits, '-' and '.'; a wildcard is \"*.\" followed by a host name)"
            ));
        }
        Ok(if wildcard {
            NamePattern::Wildcard(format!(".{base}"))
        } else {
            NamePattern::Exact(lower)
        })
    }

    /// The key it is stored under.
    fn key(&self) -> &str {
        match self {
            NamePattern::Exact(k) | NamePattern::Wildcard(k) => k,
        }
    }
}

/// One `[[server.tls]]` entry: where its files are and which names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// SNI names served with this certificate.
    pub server_names: Vec<NamePattern>,
}

/// Modification time and length of a file: a change of either means the
/// file is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: m.modified().ok(),
            len: m.len(),
        })
    }
}

/// The stamps of an entry's certificate and key files.
type Stamps = (Option<Stamp>, Option<Stamp>);

/// A loaded entry: its source, the key rustls signs with, and the stamps of
/// the files it was read from.
#[derive(Debug)]
struct Loaded {
    source: CertSource,
    key: Arc<CertifiedKey>,
    stamps: Stamps,
    /// What the leaf certificate says (`None`: x509-parser could not read
    /// it, though rustls could: no warnings then).
    leaf: Option<Arc<Leaf>>,
}

/// The parts of a leaf certificate an operator is warned about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
    /// Its DNS subject alternative names, lower case (`*.x` kept as is).
    pub dns_names: Vec<String>,
}

impl Leaf {
    /// Read a DER certificate; `None` when it cannot be parsed.
    pub fn parse(der: &[u8]) -> Option<Leaf> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Leaf {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            dns_names,
        })
    }

    /// Whether a client asking for `pattern` is given a certificate that
    /// names it (RFC 6125: a `*.` SAN covers one label).
    pub fn covers(&self, pattern: &NamePattern) -> bool {
        self.dns_names.iter().any(|san| match pattern {
            NamePattern::Exact(name) => {
                san == name
                    || san
                        .strip_prefix('*')
                        .is_some_and(|suffix| name.find('.').is_some_and(|d| &name[d..] == suffix))
            }
            NamePattern::Wildcard(suffix) => san.strip_prefix('*') == Some(suffix.as_str()),
        })
    }

    /// What is wrong with serving this certificate for `names` at `now`
    /// (Unix seconds): expired, not yet valid, names it does not cover.
    pub fn problems(&self, names: &[NamePattern], now: i64) -> Vec<String> {
        let mut out = Vec::new();
        if now > self.not_after {
            out.push(format!(
                "the certificate expired {} days ago: clients refuse it",
                (now - self.not_after) / 86_400
            ));
        } else if now < self.not_before {
            out.push("the certificate is not valid yet: clients refuse it".to_owned());
        } else if self.not_after - now < 14 * 86_400 {
            out.push(format!(
                "the certificate expires in {} days",
                (self.not_after - now) / 86_400
            ));
        }
        if self.dns_names.is_empty() {
            out.push(
                "the certificate has no DNS subject alternative name: clients check names there, not in the CN"
                    .to_owned(),
            );
        } else {
            for n in names.iter().filter(|n| !self.covers(n)) {
                let shown = match n {
                    NamePattern::Exact(name) => name.clone(),
                    NamePattern::Wildcard(suffix) => format!("*{suffix}"),
                };
                // Quoted and at most 8: a certificate's names are not ours to
                // write raw into a log line.
                let mut named: Vec<String> = self
                    .dns_names
                    .iter()
                    .take(8)
                    .map(|n| format!("{n:?}"))
                    .collect();
                if self.dns_names.len() > 8 {
                    named.push(format!("and {} more", self.dns_names.len() - 8));
                }
                out.push(format!(
                    "server_names has {shown:?} but the certificate does not name it (it names {}): clients asking for it get a name mismatch",
                    named.join(", ")
                ));
            }
        }
        out
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Read a PEM certificate chain and its key, checking they belong together.
///
/// # Errors
/// [`TlsError`] naming the file at fault.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::BadKey {
            path: key.to_owned(),
            why: format!("unsupported private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        Err(e) => Err(TlsError::BadCert {
            path: cert.to_owned(),
            why: format!("not a usable X.509 certificate: {e}"),
        }),
    }
}

/// The PEM certificates of `path`, in file order.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = crate::config::files::read_capped(path, crate::config::files::MAX_PEM_BYTES)
        .map_err(|source| TlsError::ReadCert {
            path: path.to_owned(),
            source,
        })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCert {
            path: path.to_owned(),
            why: format!("bad PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::BadCert {
            path: path.to_owned(),
            why: "no \"BEGIN CERTIFICATE\" block".to_owned(),
        });
    }
    Ok(chain)
}

/// The first PEM private key of `path`.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = crate::config::files::read_capped(path, crate::config::files::MAX_PEM_BYTES)
        .map_err(|source| TlsError::ReadKey {
            path: path.to_owned(),
            source,
        })?;
    // PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`) or OpenSSL's traditional
    // form (`Proc-Type: 4,ENCRYPTED` in a `BEGIN RSA/EC PRIVATE KEY` block).
    let contains = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    if contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::BadKey {
            path: path.to_owned(),
            why: "the private key is encrypted (a passphrase): the gateway reads unencrypted keys only; decrypt it with `openssl pkey -in KEY -out KEY.plain` and protect the file by its permissions".to_owned(),
        });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::BadKey {
        path: path.to_owned(),
        why: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no \"BEGIN PRIVATE KEY\" (PKCS#8), \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block".to_owned()
            }
            e => format!("bad PEM: {e}"),
        },
    })
}

fn load(source: CertSource) -> Result<Loaded, TlsError> {
    // Stamps first: a file changed while we read it is read again next time.
    let stamps = (Stamp::of(&source.cert), Stamp::of(&source.key));
    let key = Arc::new(load_certified_key(&source.cert, &source.key)?);
    let leaf = key.cert.first().and_then(|c| Leaf::parse(c)).map(Arc::new);
    Ok(Loaded {
        source,
        key,
        stamps,
        leaf,
    })
}

/// The compiled entries: SNI lookup tables over them.
#[derive(Debug)]
struct Entries {
    list: Vec<Loaded>,
    exact: HashMap<String, usize>,
    /// Keyed by the suffix with its leading dot (`.play.example`).
    wildcard: HashMap<String, usize>,
}

impl Entries {
    fn new(list: Vec<Loaded>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, e) in list.iter().enumerate() {
            for name in &e.source.server_names {
                let map = match name {
                    NamePattern::Exact(_) => &mut exact,
                    NamePattern::Wildcard(_) => &mut wildcard,
                };
                // Duplicates are refused by the config; the first wins anyway.
                map.entry(name.key().to_owned()).or_insert(i);
            }
        }
        Entries {
            list,
            exact,
            wildcard,
        }
    }

    /// The entry for an SNI name (already lower case); `None`: the default.
    fn lookup(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        let dot = name.find('.')?;
        self.wildcard.get(&name[dot..]).copied()
    }

    /// The entry a client sending `sni` gets.
    fn index(&self, sni: Option<&str>) -> usize {
        let i = match sni {
            // rustls lower-cases SNI already; a mixed-case name from some
            // other path costs one allocation.
            Some(n) if n.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.lookup(&n.to_ascii_lowercase())
            }
            Some(n) => self.lookup(n),
            None => None,
        };
        i.unwrap_or(0)
    }

    fn choose(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        self.list.get(self.index(sni)).map(|e| &e.key)
    }
}

/// The listener's certificates, chosen by SNI, swapped atomically on
/// rotation or reload.
#[derive(Debug)]
pub struct CertStore {
    entries: ArcSwap<Entries>,
    /// How often [`CertStore::watch`] looks at the files.
    reload_interval: Duration,
    /// Serialises writers (the watch task, a config reload); per entry, the
    /// stamps of files that failed to load, so a bad file is reported once.
    writer: Mutex<Vec<Option<Stamps>>>,
    /// Changed files that could not be loaded (the old certificate stayed).
    reload_failures: std::sync::atomic::AtomicU64,
}

impl CertStore {
    /// Load every entry; the first is the default certificate.
    ///
    /// # Errors
    /// The index of the first entry that cannot be loaded, and why.
    pub fn load(
        sources: Vec<CertSource>,
        reload_interval: Duration,
    ) -> Result<Self, (usize, TlsError)> {
        let list = sources
            .into_iter()
            .enumerate()
            .map(|(i, s)| load(s).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let n = list.len();
        Ok(CertStore {
            entries: ArcSwap::from_pointee(Entries::new(list)),
            reload_interval,
            writer: Mutex::new(vec![None; n]),
            reload_failures: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Take over every entry of `new` (a reloaded config's store): new
    /// handshakes use them, established connections keep what they have.
    /// The files are not read again (`new` has just read them).
    pub fn replace(&self, new: &CertStore) {
        let mut failed = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let entries = new.entries.load_full();
        *failed = vec![None; entries.list.len()];
        self.entries.store(entries);
    }

    /// The certificate chain a client sending `sni` is given (for tests
    /// and the admin API).
    pub fn chain_for(&self, sni: Option<&str>) -> Option<Vec<CertificateDer<'static>>> {
        self.entries.load().choose(sni).map(|k| k.cert.clone())
    }

    /// The configured entries, in order.
    pub fn sources(&self) -> Vec<CertSource> {
        self.entries
            .load()
            .list
            .iter()
            .map(|e| e.source.clone())
            .collect()
    }

    /// How often the files are looked at.
    pub fn reload_interval(&self) -> Duration {
        self.reload_interval
    }

    /// What is wrong with each entry's certificate at `now` (Unix seconds):
    /// `(entry index, problem)`. See [`Leaf::problems`].
    pub fn problems(&self, now: i64) -> Vec<(usize, String)> {
        let entries = self.entries.load();
        let mut out = Vec::new();
        for (i, e) in entries.list.iter().enumerate() {
            if let Some(leaf) = &e.leaf {
                out.extend(
                    leaf.problems(&e.source.server_names, now)
                        .into_iter()
                        .map(|p| (i, p)),
                );
            }
        }
        out
    }

    /// Each entry's first server name and its certificate's end of
    /// validity (Unix seconds), for the expiry metric.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        self.entries
            .load()
            .list
            .iter()
            .filter_map(|e| {
                let leaf = e.leaf.as_ref()?;
                let name = match e.source.server_names.first()? {
                    NamePattern::Exact(n) => n.clone(),
                    NamePattern::Wildcard(s) => format!("*{s}"),
                };
                Some((name, leaf.not_after))
            })
            .collect()
    }

    /// Changed certificate or key files that could not be loaded so far.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Read again the files that changed since they were loaded; a file
    /// that fails to load is logged and its entry keeps the old
    /// certificate. Returns how many entries were replaced.
    pub fn refresh(&self) -> usize {
        let mut failed = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.entries.load_full();
        let mut fresh: Vec<Option<Loaded>> = Vec::with_capacity(current.list.len());
        let mut replaced = 0;
        for (i, e) in current.list.iter().enumerate() {
            let stamps = (Stamp::of(&e.source.cert), Stamp::of(&e.source.key));
            if stamps == e.stamps || failed.get(i).copied().flatten() == Some(stamps) {
                fresh.push(None);
                continue;
            }
            match load(e.source.clone()) {
                Ok(l) => {
                    tracing::info!(cert = %e.source.cert.display(), "TLS certificate reloaded");
                    if let Some(leaf) = &l.leaf {
                        for p in leaf.problems(&l.source.server_names, unix_now()) {
                            tracing::warn!(cert = %e.source.cert.display(), "reloaded TLS certificate: {p}");
                        }
                    }
                    failed[i] = None;
                    replaced += 1;
                    fresh.push(Some(l));
                }
                Err(err) => {
                    self.reload_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(error = %err, "TLS certificate not reloaded: the old one stays in use");
                    failed[i] = Some(stamps);
                    fresh.push(None);
                }
            }
        }
        if replaced > 0 {
            let list = current
                .list
                .iter()
                .zip(fresh)
                .map(|(old, new)| {
                    new.unwrap_or_else(|| Loaded {
                        source: old.source.clone(),
                        key: Arc::clone(&old.key),
                        stamps: old.stamps,
                        leaf: old.leaf.clone(),
                    })
                })
                .collect();
            self.entries.store(Arc::new(Entries::new(list)));
        }
        replaced
    }

    /// Look at the files every `reload_interval` until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.reload_interval) => {}
                () = stop.cancelled() => return,
            }
            let store = Arc::clone(&self);
            // File reads and key parsing: off the async workers.
            let _ = tokio::task::spawn_blocking(move || store.refresh()).await;
        }
    }

    /// The rustls server config of a listener over this store.
    ///
    /// # Errors
    /// When rustls refuses the protocol versions (it does not with its own
    /// provider).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Unknown names get the default certificate rather than a failed
        // handshake: the client then reports a name mismatch an operator
        // can read, and IP-only clients still connect.
        self.entries.load().choose(hello.server_name()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&[&str]]) -> Entries {
        // Lookup does not touch the keys: one throwaway key serves all.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let certified = Arc::new(
            CertifiedKey::from_der(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                &provider(),
            )
            .unwrap(),
        );
        Entries::new(
            names
                .iter()
                .map(|ns| Loaded {
                    source: CertSource {
                        cert: PathBuf::new(),
                        key: PathBuf::new(),
                        server_names: ns.iter().map(|n| NamePattern::parse(n).unwrap()).collect(),
                    },
                    key: Arc::clone(&certified),
                    stamps: (None, None),
                    leaf: None,
                })
                .collect(),
        )
    }

    #[test]
    fn sni_exact_wildcard_and_default() {
        let e = entries(&[
            &["play.example"],
            &["*.api.example", "api.example"],
            &["Other.Example"],
        ]);
        let cases = [
            ("play.example", Some(0)),
            ("api.example", Some(1)),
            ("eu.api.example", Some(1)),
            // One label only.
            ("a.eu.api.example", None),
            ("other.example", Some(2)),
            ("unknown.example", None),
            ("example", None),
        ];
        for (name, want) in cases {
            assert_eq!(e.lookup(name), want, "{name}");
        }
        // Case-insensitive on both sides; unknown and absent SNI: entry 0.
        assert_eq!(e.index(Some("PLAY.Example")), 0);
        assert_eq!(e.index(Some("EU.api.example")), 1);
        assert_eq!(e.index(Some("unknown.example")), 0);
        assert_eq!(e.index(None), 0);
    }

    fn leaf(names: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let cert = params.self_signed(&key).unwrap();
        Leaf::parse(cert.der()).unwrap()
    }

    #[test]
    fn certificate_problems_expiry_and_names() {
        let names = |ns: &[&str]| -> Vec<NamePattern> {
            ns.iter().map(|n| NamePattern::parse(n).unwrap()).collect()
        };
        // 2030-01-01 as "now".
        let now = 1_893_456_000;
        let ok = leaf(
            &["play.example", "*.api.example"],
            (2029, 1, 1),
            (2031, 1, 1),
        );
        assert_eq!(ok.dns_names, ["play.example", "*.api.example"]);
        assert_eq!(ok.not_after, 1_924_992_000);
        assert!(
            ok.problems(
                &names(&["play.example", "eu.api.example", "*.api.example"]),
                now
            )
            .is_empty()
        );
        let p = ok.problems(&names(&["other.example", "a.b.api.example"]), now);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("\"other.example\""), "{p:?}");
        assert!(p[1].contains("\"a.b.api.example\""), "{p:?}");

        let expired = leaf(&["play.example"], (2028, 1, 1), (2029, 12, 1));
        let p = expired.problems(&names(&["play.example"]), now);
        assert_eq!(
            p,
            ["the certificate expired 31 days ago: clients refuse it"]
        );
        let soon = leaf(&["play.example"], (2029, 1, 1), (2030, 1, 11));
        assert_eq!(
            soon.problems(&names(&["play.example"]), now),
            ["the certificate expires in 10 days"]
        );
        let future = leaf(&["play.example"], (2030, 6, 1), (2031, 1, 1));
        assert_eq!(
            future.problems(&names(&["play.example"]), now),
            ["the certificate is not valid yet: clients refuse it"]
        );
    }

    #[test]
    fn name_patterns() {
        assert_eq!(
            NamePattern::parse("*.Play.Example"),
            Ok(NamePattern::Wildcard(".play.example".to_owned()))
        );
        assert_eq!(
            NamePattern::parse("play.example"),
            Ok(NamePattern::Exact("play.example".to_owned()))
        );
        for bad in [
            "",
            "*.",
            "a.*.example",
            "*example",
            "play..example",
            "-a.example",
            "a b",
            "*",
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
