//! The crate error and the one place where errors become HTTP statuses.
//!
//! Every gateway-made response comes from [`Error::status`] and
//! [`Error::public_message`]; the match arms are exhaustive on purpose so a new
//! variant has to be mapped deliberately.

use http::StatusCode;

/// Who caused an error: decides the log level and whether details are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The downstream client sent something we refuse (4xx); not logged as an error.
    Client,
    /// An upstream service failed or was unreachable (502/503/504).
    Upstream,
    /// A bug or resource problem inside the gateway (500).
    Internal,
}

/// Request-path errors of the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request path matched no route.
    #[error("no route matches this path")]
    NoRoute,
    /// The path exists, but not for this method; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// Comma-separated list of the methods the path accepts.
        allow: http::HeaderValue,
    },
    /// The request path cannot be normalised safely.
    #[error("bad request path: {0}")]
    BadPath(#[from] crate::router::PathError),
    /// The request is malformed in a way hyper did not catch (e.g. a missing host).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request uses a feature the gateway does not implement (e.g. a transfer-coding).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// The request body is larger than the route allows.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The downstream client stopped sending its body before it was complete.
    #[error("client aborted the request body")]
    ClientAborted,
    /// The downstream client paused too long while sending its body.
    #[error("request body timed out")]
    ClientBodyTimeout,
    /// No endpoint of the service is configured or usable.
    #[error("no upstream endpoint available")]
    NoEndpoint,
    /// No endpoint passes its health checks and the service fails fast.
    #[error("no healthy upstream endpoint")]
    NoHealthyEndpoint,
    /// Every usable endpoint is at its concurrent-request cap.
    #[error("upstream overloaded: circuit open")]
    CircuitOpen,
    /// Connecting to every tried endpoint failed.
    #[error("upstream connect failed")]
    UpstreamConnect,
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The request carries no valid bearer token (401).
    #[error("{0}")]
    Unauthorized(crate::auth::AuthError),
    /// The token is valid but lacks a role or scope the route requires (403).
    #[error("token lacks a required role or scope")]
    Forbidden,
    /// Tokens cannot be checked: no signing keys are loaded yet (503).
    #[error("authentication temporarily unavailable")]
    AuthUnavailable,
    /// A rate limit refused the request (429); `Retry-After` in seconds.
    #[error("rate limit exceeded")]
    TooManyRequests {
        /// Whole seconds until a request may succeed (rounded up).
        retry_after_seconds: u64,
    },
    /// The upstream broke the protocol or the connection mid-exchange.
    #[error("upstream protocol error")]
    UpstreamProtocol,
    /// The gateway itself failed (a bug or an exhausted resource).
    #[error("internal gateway error")]
    Internal(&'static str),
}

impl Error {
    /// The HTTP status the gateway answers with for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoRoute => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadPath(_) => StatusCode::BAD_REQUEST,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::ClientAborted => StatusCode::BAD_REQUEST,
            Error::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Error::NoHealthyEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Error::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpstreamConnect => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who caused the error.
    pub fn blame(&self) -> Blame {
        match self {
            Error::NoRoute
            | Error::MethodNotAllowed { .. }
            | Error::BadPath(_)
            | Error::BadRequest(_)
            | Error::PayloadTooLarge
            | Error::NotImplemented(_)
            | Error::ClientAborted
            | Error::ClientBodyTimeout
            | Error::Unauthorized(_)
            | Error::Forbidden
            | Error::TooManyRequests { .. } => Blame::Client,
            Error::NoEndpoint
            | Error::NoHealthyEndpoint
            | Error::CircuitOpen
            | Error::AuthUnavailable
            | Error::UpstreamConnect
            | Error::UpstreamTimeout
            | Error::UpstreamProtocol => Blame::Upstream,
            Error::Internal(_) => Blame::Internal,
        }
    }

    /// The message put in the JSON body: never internal details.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal gateway error".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The JSON body of every gateway-made error response.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    request_id: &'a str,
}

/// Build the gateway's JSON response for an error.
pub fn error_response(
    err: &Error,
    request_id: &http::HeaderValue,
) -> http::Response<crate::body::ResponseBody> {
    let message = err.public_message();
    let body = ErrorBody {
        error: &message,
        request_id: request_id.to_str().unwrap_or(""),
    };
    let bytes = serde_json::to_vec(&body)
        .unwrap_or_else(|_| b"{\"error\":\"internal gateway error\"}".to_vec());
    let mut resp = http::Response::new(crate::body::ResponseBody::full(bytes));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    match err {
        Error::MethodNotAllowed { allow } => {
            h.insert(http::header::ALLOW, allow.clone());
        }
        // RFC 6750 §3.1: a request with no bearer credentials at all gets
        // the bare challenge (the JSON body still says what was missing).
        Error::Unauthorized(
            crate::auth::AuthError::Missing | crate::auth::AuthError::NotBearer,
        ) => {
            h.insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"aether-gateway\""),
            );
        }
        // RFC 6750 §3: the challenge says why, never what the token held.
        Error::Unauthorized(_) | Error::Forbidden => {
            let code = if matches!(err, Error::Forbidden) {
                "insufficient_scope"
            } else {
                "invalid_token"
            };
            let description = message.replace(['"', '\\'], "'");
            let challenge = format!(
                "Bearer realm=\"aether-gateway\", error=\"{code}\", error_description=\"{description}\""
            );
            if let Ok(v) = http::HeaderValue::from_str(&challenge) {
                h.insert(http::header::WWW_AUTHENTICATE, v);
            }
        }
        // Overload sheds quickly; tell well-behaved clients when to come back.
        Error::CircuitOpen | Error::NoHealthyEndpoint => {
            h.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        Error::AuthUnavailable => {
            h.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
        }
        Error::TooManyRequests {
            retry_after_seconds,
        } => {
            h.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(*retry_after_seconds),
            );
        }
        _ => {}
    }
    resp
}
