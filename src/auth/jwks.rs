//! A JWKS document fetched from a URL and kept fresh in the background.
//!
//! - Refreshed every `Cache-Control: max-age`, clamped to the configured
//!   minimum and maximum interval (five minutes when the server gives none).
//! - A failed fetch keeps the last good set and retries with backoff.
//! - A token with an unknown `kid` may trigger one refetch, at most once per
//!   minimum interval: concurrent callers wait for the same fetch, and an
//!   attacker sending random kids cannot make the gateway hammer the endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keys::{KeySet, SharedKeys, parse_jwks};

/// Largest JWKS document accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Refresh interval when the server sends no `max-age`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Where and how often to fetch.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The JWKS URL (`https://` or `http://`).
    pub url: http::Uri,
    /// Never fetch more often than this (also the unknown-`kid` rate limit).
    pub min_refresh: Duration,
    /// Never keep a set longer than this without refetching.
    pub max_refresh: Duration,
    /// Time allowed for one fetch.
    pub fetch_timeout: Duration,
}

/// Why a fetch failed; the last good set stays in use.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The request failed (connect, TLS, protocol).
    #[error("request failed: {0}")]
    Request(String),
    /// The server answered with a status other than 200.
    #[error("status {0}")]
    Status(http::StatusCode),
    /// The body could not be read or was too large.
    #[error("body: {0}")]
    Body(String),
    /// The document is not a JWKS or has no usable key.
    #[error("{0}")]
    Document(String),
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A JWKS URL and the state of its fetches.
pub struct RemoteJwks {
    config: RemoteConfig,
    /// The URL as logged: a password in it redacted.
    shown_url: String,
    statics: KeySet,
    algorithms: Vec<Algorithm>,
    keys: SharedKeys,
    generation: Arc<AtomicU64>,
    client: HttpsClient,
    /// When the last fetch started; held across a fetch, so callers queue
    /// behind one fetch instead of starting their own.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// The document last installed, to tell a real change from a refresh.
    last_document: std::sync::Mutex<Option<Bytes>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    pub(super) fn new(
        config: RemoteConfig,
        statics: KeySet,
        algorithms: Vec<Algorithm>,
        keys: SharedKeys,
        generation: Arc<AtomicU64>,
    ) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let url = config.url.to_string();
        RemoteJwks {
            shown_url: crate::admin::redact_url(&url).unwrap_or(url),
            config,
            statics,
            algorithms,
            keys,
            generation,
            client: Client::builder(TokioExecutor::new()).build(connector),
            last_fetch: tokio::sync::Mutex::new(None),
            last_document: std::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// Take over the document `old` (a config being replaced, same URL)
    /// installed and when it fetched it: requests are verified with it at
    /// once, and the refresh schedule carries on instead of restarting.
    /// The new config's static keys join the set as usual.
    pub fn adopt(&self, old: &RemoteJwks) {
        if self.config.url != old.config.url {
            return;
        }
        // The schedule first, even without a document: a failing IdP is
        // not asked again at every reload.
        if let (Ok(mut mine), Ok(theirs)) = (self.last_fetch.try_lock(), old.last_fetch.try_lock())
        {
            *mine = *theirs;
        }
        let doc = old
            .last_document
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(doc) = doc else { return };
        if let Err(e) = self.install(doc) {
            tracing::warn!(error = %e, "the running JWKS document does not fit the new config: fetching anew");
            if let Ok(mut mine) = self.last_fetch.try_lock() {
                *mine = None;
            }
        }
    }

    /// Fetches attempted so far (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Keep the set fresh until `stop` is cancelled. The first fetch starts at once.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        // How long after the previous fetch the next one is due.
        let mut due_after = Duration::ZERO;
        loop {
            let next = {
                let mut last = self.last_fetch.lock().await;
                // At start, a request may have fetched first (an unknown kid
                // while no set was loaded): if that fetch got a set, this
                // one waits its minimum interval like any other.
                if due_after.is_zero()
                    && self
                        .last_document
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_some()
                {
                    due_after = self.config.min_refresh;
                }
                // An unknown-kid refetch ran meanwhile: the interval counts
                // from it, so the two never fetch back to back.
                if let Some(wait) = last
                    .map(|t| t.elapsed())
                    .filter(|e| *e < due_after)
                    .map(|e| due_after - e)
                {
                    drop(last);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = stop.cancelled() => return,
                    }
                }
                *last = Some(Instant::now());
                match self.fetch().await {
                    Ok(max_age) => {
                        backoff = Duration::from_secs(1);
                        max_age
                            .unwrap_or(DEFAULT_REFRESH)
                            .clamp(self.config.min_refresh, self.config.max_refresh)
                    }
                    Err(e) => {
                        if self
                            .last_document
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .is_some()
                        {
                            tracing::warn!(url = %self.shown_url, error = %e, retry_in = ?backoff, "JWKS fetch failed; keeping the last good key set");
                        } else {
                            tracing::warn!(url = %self.shown_url, error = %e, retry_in = ?backoff, "JWKS fetch failed; no key set yet: protected routes answer 503");
                        }
                        let wait = backoff;
                        backoff =
                            (backoff * 2).min(self.config.min_refresh.max(Duration::from_secs(1)));
                        wait
                    }
                }
            };
            due_after = next;
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// A token named a `kid` we do not have: refetch, unless a fetch started
    /// less than the minimum interval ago. Returns whether this call fetched.
    pub async fn refetch_for_unknown_key(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.config.min_refresh) {
            return false;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(url = %self.shown_url, error = %e, "JWKS refetch for an unknown kid failed");
        }
        true
    }

    /// Fetch, parse and install; returns the server's `max-age`.
    async fn fetch(&self) -> Result<Option<Duration>, FetchError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let req = http::Request::get(self.config.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "aether-gateway")
            .body(Empty::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Request(e.to_string()))?;
            if resp.status() != http::StatusCode::OK {
                return Err(FetchError::Status(resp.status()));
            }
            let max_age = max_age(resp.headers());
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| FetchError::Body(e.to_string()))?
                .to_bytes();
            Ok((max_age, body))
        };
        let (max_age, body) = tokio::time::timeout(self.config.fetch_timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout)??;
        self.install(body)?;
        Ok(max_age)
    }

    fn install(&self, doc: Bytes) -> Result<(), FetchError> {
        let mut last = self.last_document.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() == Some(&doc) {
            return Ok(());
        }
        let parsed = parse_jwks(&doc, &self.algorithms, false)
            .map_err(|e| FetchError::Document(e.to_string()))?;
        for s in &parsed.skipped {
            tracing::warn!(url = %self.shown_url, "JWKS {s}: skipped");
        }
        if parsed.keys.is_empty() {
            return Err(FetchError::Document("no usable key in the document".into()));
        }
        let mut set = self.statics.clone();
        for k in parsed.keys {
            set.push(k);
        }
        tracing::info!(url = %self.shown_url, keys = set.len(), "JWKS key set installed");
        self.keys.store(Arc::new(set));
        self.generation.fetch_add(1, Ordering::Relaxed);
        *last = Some(doc);
        Ok(())
    }
}

/// `max-age` of a `Cache-Control` header; `no-cache`/`no-store` mean zero
/// (the minimum interval then applies).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        for directive in v.to_str().ok()?.split(',') {
            let d = directive.trim();
            if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if let Some((k, val)) = d.split_once('=')
                && k.trim().eq_ignore_ascii_case("max-age")
                && let Ok(secs) = val.trim().trim_matches('"').parse::<u64>()
            {
                found = Some(Duration::from_secs(secs));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        m.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
        m
    }

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age(&h("public, max-age=120")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(max_age(&h("MAX-AGE = 7")), Some(Duration::from_secs(7)));
        assert_eq!(max_age(&h("max-age=120, no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&h("public")), None);
        assert_eq!(max_age(&h("max-age=x")), None);
        assert_eq!(max_age(&http::HeaderMap::new()), None);
    }
}
