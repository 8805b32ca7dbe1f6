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
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access_log: true,
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
    Ok(LogSettings {
        format: match raw.format {
            LogFormatFile::Text => LogFormat::Text,
            LogFormatFile::Json => LogFormat::Json,
        },
        level: level.clone(),
        access_log: raw.access_log,
    })
}
