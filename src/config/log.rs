//! `[log]`: the process log's format and default filter, and the access log.

use toml::Spanned;

use super::ConfigError;
use super::file::{LogFile, LogFormatFile};
use super::validate::Ctx;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (tracing-subscriber's default format).
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// The validated `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// The filter used when `RUST_LOG` is unset (`tracing_subscriber::EnvFilter` syntax).
    pub level: String,
    /// One line per request at target `access`.
    pub access_log: bool,
    /// Where request spans are exported over OTLP/HTTP (`otel` builds only).
    pub otlp_endpoint: Option<String>,
    /// Whose `traceparent` a request continues.
    pub incoming_trace: crate::metrics::traceparent::IncomingTrace,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access_log: true,
            otlp_endpoint: None,
            incoming_trace: crate::metrics::traceparent::IncomingTrace::Continue,
        }
    }
}

fn is_level(word: &str) -> bool {
    ["trace", "debug", "info", "warn", "error", "off"]
        .iter()
        .any(|l| word.eq_ignore_ascii_case(l))
}

pub(super) fn build(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<LogFile>>,
) -> Result<LogSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(LogSettings::default());
    };
    let raw = raw.get_ref();
    let level = raw.level.get_ref();
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(cx.spanned(
            &raw.level,
            "log.level",
            format!("{level:?} is not a log filter (like \"info\" or \"info,aether_gateway=debug\"): {e}"),
        ));
    }
    // A bare word is, to the filter, a target to log at every level, and
    // nothing else is logged then: "inof" would silence the gateway. In
    // the config a bare word must be a level; a target takes `=LEVEL`.
    if let Some(word) = level
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty() && !d.contains('=') && !d.contains('[') && !is_level(d))
    {
        return Err(cx.spanned(
            &raw.level,
            "log.level",
            format!(
                "{word:?} is not a level (trace, debug, info, warn, error, off); a target needs one too, like \"{word}=debug\""
            ),
        ));
    }
    let otlp_endpoint = match &raw.otlp_endpoint {
        None => None,
        Some(s) => {
            if !cfg!(feature = "otel") {
                return Err(cx.spanned(
                    s,
                    "log.otlp_endpoint",
                    "this build has no OpenTelemetry export (build with the cargo feature `otel`)",
                ));
            }
            let uri = s.get_ref().parse::<http::Uri>().ok();
            if uri.as_ref().and_then(|u| u.scheme_str()) != Some("http")
                || uri.as_ref().and_then(|u| u.host()).is_none()
            {
                return Err(cx.spanned(
                    s,
                    "log.otlp_endpoint",
                    format!(
                        "{} is not an http:// URL (like \"http://127.0.0.1:4318/v1/traces\")",
                        super::validate::url_shown(s.get_ref())
                    ),
                ));
            }
            Some(s.get_ref().clone())
        }
    };
    Ok(LogSettings {
        otlp_endpoint,
        format: match raw.format {
            LogFormatFile::Text => LogFormat::Text,
            LogFormatFile::Json => LogFormat::Json,
        },
        level: level.clone(),
        access_log: raw.access_log,
        incoming_trace: match raw.incoming_trace {
            super::file::IncomingTraceFile::Continue => {
                crate::metrics::traceparent::IncomingTrace::Continue
            }
            super::file::IncomingTraceFile::Trusted => {
                crate::metrics::traceparent::IncomingTrace::Trusted
            }
            super::file::IncomingTraceFile::Restart => {
                crate::metrics::traceparent::IncomingTrace::Restart
            }
        },
    })
}
