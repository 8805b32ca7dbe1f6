//! The admin listener: a separate port (loopback unless the operator says
//! otherwise) for the people running the gateway, never for clients.
//!
//! - `GET /healthz`: the process is up.
//! - `GET /admin/upstreams`: every service, endpoint, health state,
//!   ejection and load figure, as JSON.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dispatch::pipeline::Shared;
use crate::health::ServiceHealth;

/// Where the admin API reads the gateway's state: the same snapshot the
/// request path uses.
pub(crate) type SnapshotSource = Arc<Shared>;

/// Serve the admin API on `listener` until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    snapshot: SnapshotSource,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let snapshot = Arc::clone(&snapshot);
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let snapshot = Arc::clone(&snapshot);
                async move { Ok::<_, Infallible>(handle(&snapshot, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

#[derive(Serialize)]
struct Upstreams {
    services: Vec<ServiceHealth>,
}

fn handle(snapshot: &SnapshotSource, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/healthz" | "/admin/upstreams");
    if !known {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found"}),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        _ => {
            let snap = snapshot.snapshot.load();
            let mut services: Vec<ServiceHealth> = snap
                .dispatcher
                .services()
                .map(|s| ServiceHealth::of(s))
                .collect();
            services.sort_by(|a, b| a.service.cmp(&b.service));
            json(StatusCode::OK, &Upstreams { services })
        }
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
