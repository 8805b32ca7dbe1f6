//! The admin listener: a separate port (loopback unless the operator says
//! otherwise) for the people running the gateway, never for clients.
//!
//! - `GET /healthz`: the process is up.
//! - `GET /admin/upstreams`: every service, endpoint, health state,
//!   ejection and load figure, as JSON.
//! - `GET /admin/geo`: geo routing's latency table (configured and
//!   measured), each service's regions and the region each client region
//!   is sent to now.
//! - `GET /admin/relay`: the voice relay's allocations, relayed packets
//!   and bytes, drops by reason (counts only, never per user).
//! - `POST /admin/relay/revoke?user=NAME`: delete the user's allocations
//!   now and refuse the user's requests until credentials issued before
//!   lapse; `DELETE` on the same path lifts it.

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
    let allow = match path {
        "/healthz" | "/metrics" | "/admin/upstreams" | "/admin/geo" | "/admin/relay" => "GET, HEAD",
        "/admin/relay/revoke" => "POST, DELETE",
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not found"}),
            );
        }
    };
    let allowed = match allow {
        "GET, HEAD" => req.method() == Method::GET || req.method() == Method::HEAD,
        _ => req.method() == Method::POST || req.method() == Method::DELETE,
    };
    if !allowed {
        let mut r = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static(allow));
        return r;
    }
    match path {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/metrics" => crate::metrics::scrape(snapshot),
        "/admin/geo" => json(StatusCode::OK, &geo_status(&snapshot.snapshot.load())),
        "/admin/relay" => match &snapshot.relay {
            Some(r) => json(StatusCode::OK, &r.status()),
            None => json(StatusCode::OK, &serde_json::json!({"enabled": false})),
        },
        "/admin/relay/revoke" => revoke(snapshot, req),
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

fn revoke(snapshot: &SnapshotSource, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(relay) = &snapshot.relay else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no [relay] configured"}),
        );
    };
    let user = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.into_owned())
    });
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "give the user: ?user=NAME (a static user or a token's sub)"}),
        );
    };
    if req.method() == Method::DELETE {
        let was = relay.unrevoke(&user);
        tracing::info!(user = %user, was_revoked = was, "relay revocation lifted");
        return json(
            StatusCode::OK,
            &serde_json::json!({"user": user, "was_revoked": was}),
        );
    }
    let deleted = relay.revoke(&user);
    tracing::info!(user = %user, allocations_deleted = deleted, "relay user revoked");
    json(
        StatusCode::OK,
        &serde_json::json!({
            "user": user,
            "allocations_deleted": deleted,
            "revoked_until": relay.revoked_until(&user),
        }),
    )
}

fn geo_status(snap: &crate::config::Snapshot) -> serde_json::Value {
    let Some(p) = &snap.geo else {
        return serde_json::json!({"enabled": false});
    };
    let ids = || (0..p.regions().len() as u16).map(crate::geo::RegionId);
    let table = |client: Option<crate::geo::RegionId>| {
        ids()
            .filter_map(|s| {
                p.configured_latency_ms(client, s)
                    .map(|ms| (p.name(s).to_string(), ms))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let latency: std::collections::BTreeMap<String, _> = ids()
        .map(|c| (p.name(c).to_string(), table(Some(c))))
        .filter(|(_, row)| !row.is_empty())
        .collect();
    let mut services: Vec<_> = snap
        .dispatcher
        .services()
        .filter_map(|s| s.geo_status())
        .collect();
    services.sort_by(|a, b| a.service.cmp(&b.service));
    serde_json::json!({
        "enabled": true,
        "regions": p.regions().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "default_region": p.default_region().map(|r| p.name(r).to_string()),
        "latency_ms": latency,
        "default_latency_ms": table(None),
        "unknown_latency_ms": p.unknown_latency_ms,
        "hysteresis_ms": p.hysteresis_ms,
        "failback_seconds": p.failback.as_secs(),
        "geoip_cache_entries": p.locator.cache.capacity(),
        "services": services,
    })
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
