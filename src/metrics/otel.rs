//! OpenTelemetry export (cargo feature `otel`): one server span per request
//! sent upstream, over OTLP/HTTP (protobuf) to `[log] otlp_endpoint`.
//!
//! The span's ids are the ones the gateway already put in the upstream's
//! `traceparent` (trace id, and the gateway's span id as the upstream's
//! parent), so the exported span sits exactly between the client's span and
//! the upstream's. Spans are finished here and handed to the SDK's batch
//! processor, which exports from its own thread; the HTTP client runs each
//! export on the gateway's tokio runtime (the SDK thread only waits for it).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};

use super::access::AccessLine;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct OtelError(String);

/// The span exporter of one running gateway.
#[derive(Debug)]
pub struct SpanExport {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl SpanExport {
    /// An exporter to `endpoint` (`http://host:port/v1/traces`), its HTTP
    /// requests run on `runtime`.
    ///
    /// # Errors
    /// When the OTLP exporter cannot be built.
    pub fn start(endpoint: &str, runtime: tokio::runtime::Handle) -> Result<Self, OtelError> {
        let client = TokioHttp {
            runtime,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_http_client(client)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OtelError(e.to_string()))?;
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    // Spans reach the collector within a second.
                    .with_scheduled_delay(Duration::from_secs(1))
                    .build(),
            )
            .build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name("aether-gateway")
                .build(),
        );
        Ok(SpanExport {
            processor,
            scope: InstrumentationScope::builder("aether-gateway")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// Queue the span of a finished request (nothing for one that was not
    /// sent upstream: it has no trace).
    pub(crate) fn record(&self, line: &AccessLine) {
        let x = &line.exchange;
        let Some(trace) = x.trace else { return };
        let end = SystemTime::now();
        let start = end
            .checked_sub(line.started.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let route = x.route.as_ref().map(|r| r.policy.name.clone());
        let mut attributes = vec![
            KeyValue::new(
                "http.request.method",
                super::access::clip(line.method.as_str(), super::access::MAX_LOGGED_METHOD)
                    .to_owned(),
            ),
            KeyValue::new(
                "url.path",
                super::access::clip(line.uri.path(), super::access::MAX_LOGGED_PATH).to_owned(),
            ),
            KeyValue::new("http.response.status_code", i64::from(line.status)),
            KeyValue::new("client.address", line.client_ip.to_string()),
            KeyValue::new(
                "aether.request_id",
                line.request_id.to_str().unwrap_or_default().to_owned(),
            ),
        ];
        if let Some(r) = &route {
            attributes.push(KeyValue::new("http.route", r.to_string()));
        }
        if let Some(r) = &x.route {
            attributes.push(KeyValue::new(
                "aether.service",
                r.route.target.name().to_owned(),
            ));
        }
        if let Some(e) = line.endpoint {
            attributes.push(KeyValue::new("aether.upstream", e.to_string()));
        }
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(trace.trace_id),
                SpanId::from_bytes(trace.parent_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: x
                .incoming_parent
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: x.incoming_parent.is_some(),
            span_kind: SpanKind::Server,
            name: route.map_or(Cow::Borrowed("request"), |r| Cow::Owned(r.to_string())),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: if line.status >= 500 {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: self.scope.clone(),
        };
        self.processor.on_end(span);
    }

    /// Export what is queued and stop; blocks (call it off the runtime's
    /// workers: the export itself runs on them).
    pub fn shutdown(&self) {
        if let Err(e) = self.processor.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter shutdown");
        }
    }
}

/// OTLP's HTTP client: each export is a task on the gateway's runtime.
#[derive(Debug)]
struct TokioHttp {
    runtime: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient for TokioHttp {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let resp = client
                .request(http::Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        });
        Box::pin(async move { task.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}
