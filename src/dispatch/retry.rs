//! When a failed attempt is tried again on another endpoint.
//!
//! Retries go to an endpoint not tried yet, only for requests that can be
//! sent twice safely (idempotent methods, or routes that opt in) and whose
//! body is empty (nothing to replay), and only while the service's
//! [`RetryBudget`](crate::upstream::RetryBudget) lasts. A connect failure is
//! the exception: the request never left, so any request may go elsewhere,
//! and it costs no budget because the upstream saw no extra load.

use std::time::Duration;

/// Which failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// No connection could be made (the request was never sent).
    pub connect_failure: bool,
    /// The connection broke before response headers arrived.
    pub reset: bool,
    /// The upstream answered 502, 503 or 504.
    pub gateway_error: bool,
    /// An attempt exceeded `per_try_timeout`.
    pub timeout: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            connect_failure: true,
            reset: true,
            gateway_error: true,
            timeout: false,
        }
    }
}

/// A route's retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts at most (each on another endpoint). Default 1.
    pub retries: u8,
    /// Which failures are retried.
    pub on: RetryOn,
    /// Retry non-idempotent methods (POST, PATCH) too. Default false.
    pub non_idempotent: bool,
    /// Time for one attempt's response headers; `None`: the route timeout only.
    pub per_try_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 1,
            on: RetryOn::default(),
            non_idempotent: false,
            per_try_timeout: None,
        }
    }
}

/// RFC 9110 §9.2.2: methods whose repetition has the effect of one.
pub fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// The most endpoints one request may try (the first attempt and retries).
pub const MAX_ATTEMPTS: usize = 8;

/// Endpoints a request has tried, on the stack.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    idx: [usize; MAX_ATTEMPTS],
    len: usize,
}

impl Tried {
    pub(crate) fn push(&mut self, i: usize) {
        if self.len < MAX_ATTEMPTS {
            self.idx[self.len] = i;
            self.len += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.idx[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_per_rfc_9110() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn tried_is_bounded() {
        let mut t = Tried::default();
        for i in 0..20 {
            t.push(i);
        }
        assert_eq!(t.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7]);
    }
}
