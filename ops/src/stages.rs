//! Stage records (`[perf] stage_log`): when each stage of a block's stream finished at a
//! relay or gateway, one JSON line per record (`perf/README.md`, "Stage records"). The
//! format is defined once here: [`StageRecord`] (what `perf report` reads), [`StageLine`] and
//! [`StageFile`] (what the binaries write, without allocating per record).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError};

/// The stages a block's stream passes, in order. Other stage names are accepted and reported
/// after these.
pub const STAGES: [&str; 15] = [
    "block_in",           // source gateway: the block arrived from its node
    "compress",           // source: compressed with short IDs
    "seal",               // source: encrypted under the block key
    "fec",                // source: FEC-encoded into shards
    "first_fragment_out", // source: first fragment sent
    "last_fragment_out",  // source: last fragment sent (`bytes`: all fragments' bytes)
    "relay",              // relay: first fragment of the stream forwarded
    "first_fragment_in",  // receiver: first fragment received
    "last_fragment_in",   // receiver: enough fragments to decode
    "receipt_sent",       // receiver: its receipt sent
    "receipts",           // source: enough receipts (the key-release quorum)
    "key_release",        // source: key released
    "key_in",             // receiver: key received
    "decode",             // receiver: FEC-decoded, opened, decompressed
    "deliver",            // receiver: block handed to its node
];

/// One stage timestamp as read back (a JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Unix time in nanoseconds (`SystemTime`), taken when the stage finished.
    pub t_ns: u64,
    /// Who recorded it (the gateway's or relay's name in the testbed, e.g. `gw3`).
    pub node: String,
    /// One of [`STAGES`] (or another name: reported after them).
    pub stage: String,
    /// The block hash (hex, as Bitcoin displays it), where the recorder knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    /// The protocol stream ID, where the recorder knows it (joined to `block` through any
    /// record that carries both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u64>,
    /// Bytes, where the stage has a size (e.g. `last_fragment_out`: bytes of all fragments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// One record as written: [`StageRecord`]'s fields, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLine<'a, B = &'a str> {
    pub t_ns: u64,
    pub stage: &'a str,
    /// Anything that displays as the block hash.
    pub block: Option<B>,
    pub stream: Option<u64>,
    pub bytes: Option<u64>,
}

impl<B: std::fmt::Display> StageLine<'_, B> {
    /// Appends the JSON line (with its newline) for node `node` (no quotes or backslashes:
    /// [`valid_node_name`]; stage names and block hashes are plain ASCII words).
    pub fn format(&self, node: &str, out: &mut String) {
        let _ = write!(
            out,
            "{{\"t_ns\":{},\"node\":\"{node}\",\"stage\":\"{}\"",
            self.t_ns, self.stage
        );
        if let Some(b) = &self.block {
            let _ = write!(out, ",\"block\":\"{b}\"");
        }
        if let Some(s) = self.stream {
            let _ = write!(out, ",\"stream\":{s}");
        }
        if let Some(b) = self.bytes {
            let _ = write!(out, ",\"bytes\":{b}");
        }
        out.push_str("}\n");
    }
}

/// Whether `name` can be written into a JSON string as is.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['"', '\\']) && !name.chars().any(char::is_control)
}

/// A binary's `[perf]` configuration section: stage records for the propagation report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerfSection {
    /// JSON-lines stage records (`perf/README.md`) appended here; absent: none.
    pub stage_log: Option<PathBuf>,
    /// The `node` field of the records; absent: the binary's name.
    pub node_name: Option<String>,
}

impl PerfSection {
    /// Refuses a `node_name` that would break the records' JSON ([`valid_node_name`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.node_name {
            Some(name) if !valid_node_name(name) => Err(invalid(
                "perf.node_name",
                "must be non-empty, without quotes, backslashes or control characters",
            )),
            _ => Ok(()),
        }
    }

    /// When records are asked for: the file (`stage_log` joined to `base`, so that a relative
    /// path is relative to it) and the node name (`default_node` if none is set).
    pub fn stage_log(&self, base: &Path, default_node: &str) -> Option<(PathBuf, String)> {
        let path = base.join(self.stage_log.as_ref()?);
        let name = (self.node_name.clone()).unwrap_or_else(|| default_node.into());
        Some((path, name))
    }
}

/// Unix time in nanoseconds from the system clock.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A stage-record file: lines are buffered ([`StageFile::push`]) and written on
/// [`StageFile::flush`]; a failed write is logged once, and the records are lost (counted
/// nowhere else: the run goes on).
#[derive(Debug)]
pub struct StageFile {
    node: String,
    path: PathBuf,
    file: std::fs::File,
    buf: String,
    failed: bool,
}

impl StageFile {
    /// Opens (creates, appends to) `path`; records carry `node`.
    pub fn open(path: &Path, node: &str) -> std::io::Result<StageFile> {
        if !valid_node_name(node) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("stage-record node name {node:?}: empty, or has a quote, backslash or control character"),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(StageFile {
            node: node.to_owned(),
            path: path.to_owned(),
            file,
            buf: String::with_capacity(4096),
            failed: false,
        })
    }

    /// Buffers one record.
    pub fn push<B: std::fmt::Display>(&mut self, line: &StageLine<'_, B>) {
        line.format(&self.node, &mut self.buf);
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(self.buf.as_bytes()) {
            if !self.failed {
                self.failed = true;
                tracing::warn!(path = %self.path.display(), error = %e,
                    "cannot write perf.stage_log: records lost");
            }
        }
        self.buf.clear();
    }
}

impl Drop for StageFile {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay's line: about a stream, no block.
    fn relay_line(t_ns: u64, stage: &str, stream: u64, bytes: Option<u64>) -> StageLine<'_> {
        StageLine {
            t_ns,
            stage,
            block: None,
            stream: Some(stream),
            bytes,
        }
    }

    #[test]
    fn written_lines_read_back_as_records() {
        let mut out = String::new();
        relay_line(5, "relay", 7, None).format("relay0", &mut out);
        StageLine {
            t_ns: 6,
            stage: "deliver",
            block: Some("00ab"),
            stream: Some(7),
            bytes: Some(1200),
        }
        .format("gw3", &mut out);
        let recs: Vec<StageRecord> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs[0].node, "relay0");
        assert_eq!((recs[0].stream, recs[0].block.as_deref()), (Some(7), None));
        assert_eq!(
            recs[1],
            StageRecord {
                t_ns: 6,
                node: "gw3".into(),
                stage: "deliver".into(),
                block: Some("00ab".into()),
                stream: Some(7),
                bytes: Some(1200),
            }
        );
    }

    #[test]
    fn relay_lines_are_the_exact_json() {
        let mut s = String::new();
        relay_line(1_732_412_345_123_500_000, "relay", 7, None).format("relay0", &mut s);
        relay_line(2, "relay_last", u64::MAX, Some(52310)).format("relay0", &mut s);
        assert_eq!(
            s,
            "{\"t_ns\":1732412345123500000,\"node\":\"relay0\",\"stage\":\"relay\",\"stream\":7}\n\
             {\"t_ns\":2,\"node\":\"relay0\",\"stage\":\"relay_last\",\"stream\":18446744073709551615,\"bytes\":52310}\n"
        );
    }

    #[test]
    fn node_names_that_would_break_the_json_are_refused() {
        assert!(valid_node_name("gw3"));
        for bad in ["", "a\"b", "a\\b", "a\nb"] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
        let dir = std::env::temp_dir();
        assert!(StageFile::open(&dir.join("photon-ops-bad.jsonl"), "a\"b").is_err());
    }
}
