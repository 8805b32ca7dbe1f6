//! OTLP span export (cargo feature `otel`): a real OTLP/HTTP receiver on
//! loopback gets the request's span, with the ids the upstream saw.
//!
//! Run with `cargo test --features otel --test otel`.
#![cfg(feature = "otel")]

mod support;

use std::sync::{Arc, Mutex};

use aether_gateway::metrics::traceparent::TraceParent;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;

/// What the collector received: path, content type, body.
type Received = Arc<Mutex<Vec<(String, String, Bytes)>>>;

/// A minimal OTLP/HTTP collector: records every POST, answers 200 with an
/// empty `ExportTraceServiceResponse`.
async fn collector() -> (std::net::SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let store = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let store = Arc::clone(&store);
                    async move {
                        let path = req.uri().path().to_owned();
                        let ct = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        store.lock().unwrap().push((path, ct, body));
                        let mut r = http::Response::new(Full::new(Bytes::new()));
                        r.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_span_reaches_the_collector_with_the_upstreams_ids() {
    let (otlp, got) = collector().await;
    let up = Upstream::start("world-1").await;
    let gw = gateway(&format!(
        "[log]\nformat = \"json\"\notlp_endpoint = \"http://{otlp}/v1/traces\"\n{}[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/worlds/{{world_id}}\"\nservice = \"world-service\"\n",
        service_toml("world-service", &[up.addr], ""),
    ))
    .await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = http1(
        gw.local_addr(),
        req("GET", "/api/v1/worlds/42", &[("traceparent", incoming)], ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let sent = TraceParent::parse(r.upstream_header("traceparent").unwrap().as_bytes()).unwrap();
    // A request with no traceparent starts a trace flagged sampled: its
    // span is exported.
    let r = http1(gw.local_addr(), get("/api/v1/worlds/43")).await;
    let root = TraceParent::parse(r.upstream_header("traceparent").unwrap().as_bytes()).unwrap();
    assert_eq!(root.flags, 1);

    // Shutdown flushes the batch: no waiting on the export interval.
    gw.shutdown();
    gw.wait().await;
    let got = got.lock().unwrap();
    assert!(!got.is_empty(), "nothing exported");
    let bodies: Vec<u8> = got
        .iter()
        .inspect(|(path, ct, _)| {
            assert_eq!(path, "/v1/traces");
            assert_eq!(ct, "application/x-protobuf");
        })
        .flat_map(|(_, _, b)| b.to_vec())
        .collect();
    // The protobuf carries ids as raw bytes and strings as UTF-8.
    assert!(contains(&bodies, &sent.trace_id), "trace id");
    assert!(contains(&bodies, &sent.parent_id), "the gateway's span id");
    assert!(
        contains(&bodies, &[0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
        "the client's span as parent"
    );
    assert!(contains(&bodies, &root.trace_id), "the new trace");
    assert!(contains(&bodies, &root.parent_id));
    assert!(contains(&bodies, b"GET /api/v1/worlds/{world_id}"));
    assert!(contains(&bodies, b"aether-gateway"));
    assert!(!contains(&bodies, b"/api/v1/worlds/42?"));
}
