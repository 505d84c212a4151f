//! Configuration errors that tell the operator what to change, and the TOML reader both
//! binaries use.

use std::path::{Path, PathBuf};

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, a missing or unknown key, a value of the wrong type or format (toml's
    /// message names it).
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value that parses but does not make sense (with the key it concerns).
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// A [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The text of the config file at `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e = read(Path::new("/nonexistent/photon.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/photon.toml"), "{e}");
        let e = invalid("relay.cores", "must not be empty");
        assert_eq!(e.to_string(), "config key `relay.cores`: must not be empty");
        let e: ConfigError = toml::from_str::<toml::Table>("a = ").unwrap_err().into();
        assert!(matches!(e, ConfigError::Parse(_)));
    }
}
