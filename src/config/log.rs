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
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access_log: true,
            otlp_endpoint: None,
        }
    }
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
                        "{:?} is not an http:// URL (like \"http://127.0.0.1:4318/v1/traces\")",
                        s.get_ref()
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
    })
}
