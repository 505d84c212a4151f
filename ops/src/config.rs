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
    /// TOML syntax, a missing or unknown key, a value of the wrong type or format: toml's
    /// message, with the file and the `section.key` it points at ([`parse`]).
    #[error("{message}")]
    Parse { message: String },
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

/// Unless `value` lies in `range`: an [`invalid`] `key`, "`value` is not in `start..=end`"
/// followed by `note` (what the range means, or nothing).
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    note: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let (start, end) = range.into_inner();
    Err(invalid(
        key,
        format!("{value} is not in {start}..={end}{note}"),
    ))
}

/// Parses TOML `text` (from the file `path`, if it came from one) into `T`; a parse error
/// names the file and the `section.key` it points at, even when toml's own text only quotes
/// the line.
pub fn parse<T: serde::de::DeserializeOwned>(
    text: &str,
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let mut message = String::new();
        if let Some(p) = path {
            message.push_str(&format!("config file {}: ", p.display()));
        }
        if let Some(key) = e.span().and_then(|span| key_at(text, span.start)) {
            message.push_str(&format!("key `{key}`: "));
        }
        message.push_str(&e.to_string());
        ConfigError::Parse { message }
    })
}

/// Reads and parses the config file at `path` ([`read`], [`parse`]).
pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    parse(&read(path)?, Some(path))
}

/// The `section.key` at byte `at` of a TOML text: the key on that line, under the last table
/// header before it.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(['[', ']']).trim().to_string())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
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
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct C {
            relay: R,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct R {
            cores: u32,
        }
        let e = parse::<C>("[relay]\ncores = \"two\"\n", Some(Path::new("r.toml"))).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("config file r.toml: key `relay.cores`: "),
            "{m}"
        );
        assert!(matches!(e, ConfigError::Parse { .. }));
    }
}
