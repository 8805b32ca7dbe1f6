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

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn is_level(word: &str) -> bool {
    LEVELS.iter().any(|l| word.eq_ignore_ascii_case(l))
}

/// The directives of a filter that are a bare word (no `=`, no span
/// filter): to the filter, targets to log at every level.
fn bare_words(filter: &str) -> impl Iterator<Item = &str> {
    filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('=') && !d.contains('['))
}

/// "; did you mean …" for a word a typo away from a level, else how to
/// write a target.
fn level_hint(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    match LEVELS
        .iter()
        .filter(|l| **l != "off")
        .find(|l| distance(&lower, l) <= 2 || lower.starts_with(**l))
    {
        Some(l) => format!(" (trace, debug, info, warn, error, off): did you mean {l:?}?"),
        None => format!(
            " (trace, debug, info, warn, error, off); a target needs its level too, like \"{word}=debug\""
        ),
    }
}

/// Edit distance, for level names only (a few bytes).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Why a `RUST_LOG` would silence the gateway by mistake: a bare word that
/// is neither a level nor looks like a target (a crate or module name
/// with `_` or `::`, or one of the gateway's dependencies), as a misspelt
/// level is. `None` when it looks meant.
pub fn rust_log_typo(filter: &str) -> Option<String> {
    const TARGETS: [&str; 12] = [
        "access",
        "hyper",
        "h2",
        "tokio",
        "rustls",
        "mio",
        "redis",
        "tower",
        "matchit",
        "maxminddb",
        "jsonwebtoken",
        "opentelemetry",
    ];
    let word = bare_words(filter).find(|w| {
        !is_level(w)
            && !w.contains('_')
            && !w.contains("::")
            && !TARGETS.iter().any(|t| w.eq_ignore_ascii_case(t))
    })?;
    Some(format!("{word:?} is not a level{}", level_hint(word)))
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
    if level.trim().is_empty() {
        return Err(cx.spanned(
            &raw.level,
            "log.level",
            "is empty: an empty filter logs nothing at all (use \"info\", or \"off\" to mean it)",
        ));
    }
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
    if let Some(word) = bare_words(level).find(|w| !is_level(w)) {
        return Err(cx.spanned(
            &raw.level,
            "log.level",
            format!("{word:?} is not a level{}", level_hint(word)),
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
