//! Log set-up for the binaries: `tracing` to standard error, text or JSON, the level from
//! `RUST_LOG` or the config, colours only on a terminal.

use serde::Deserialize;

use crate::config::ConfigError;

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A binary's `[log]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// An `EnvFilter` directive (`info`, `photon_relay=debug`, ...); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogSection {
    /// Checks that `level` parses as a filter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid {
                key: "log.level".into(),
                message: format!("{:?} is not a tracing filter: {e}", self.level),
            })
    }
}

/// Installs the global subscriber (a second call changes nothing). `level` is an `EnvFilter`
/// directive (`info`, `photon_relay=debug`, ...); `RUST_LOG` wins over it; a bad one falls
/// back to `info`.
pub fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to files stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
