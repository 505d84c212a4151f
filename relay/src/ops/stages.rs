//! Stage records of the relay (`relay`, `relay_last`) for the propagation report: the sans-IO
//! [`StageRecorder`] decides them from forwarded fragments, bounded in memory; [`StageLog`]
//! writes them (format: `photon_ops::stages`). Where the times come from on each backend:
//! `docs/internals/relay.md`, "Stage records".

use std::path::Path;
use std::time::{Duration, Instant};

use photon_ops::stages::StageFile;
pub use photon_ops::stages::{unix_ns, valid_node_name, StageLine};

use photon_protocol::fifo::FifoMap;

/// The stage of a stream's first forwarded fragment (`report::STAGES`).
pub const STAGE_RELAY: &str = "relay";
/// The stage of a stream's last forwarded fragment (not in `report::STAGES`: reported after).
pub const STAGE_RELAY_LAST: &str = "relay_last";
/// Streams remembered (first seen order; the oldest forgotten first).
pub const STREAM_MEMORY: usize = 4096;
/// A stream with no forwarded fragment for this long is closed: its `relay_last` is written.
pub const QUIET_NS: u64 = 500_000_000;
/// How often [`StageLog::poll`] writes the buffered lines.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Seen {
    last_ns: u64,
    bytes: u64,
    open: bool,
}

/// Decides the stage records from forwarded fragments. See the module documentation.
#[derive(Debug)]
pub struct StageRecorder {
    streams: FifoMap<u64, Seen>,
    /// Streams not closed yet (a subset of `streams`).
    open: Vec<u64>,
    quiet_ns: u64,
    lines: Vec<StageLine<'static>>,
    /// Fragments of streams already closed (not recorded).
    late: u64,
}

impl StageRecorder {
    /// Remembers at most `memory` streams; closes a stream after `quiet_ns` without fragments.
    pub fn new(memory: usize, quiet_ns: u64) -> StageRecorder {
        StageRecorder {
            streams: FifoMap::new(memory),
            open: Vec::new(),
            quiet_ns,
            lines: Vec::new(),
            late: 0,
        }
    }

    /// A fragment of `stream` (`bytes` long) was forwarded at `t_ns`.
    pub fn fragment(&mut self, t_ns: u64, stream: u64, bytes: u64) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if s.open {
                s.last_ns = s.last_ns.max(t_ns);
                s.bytes = s.bytes.saturating_add(bytes);
            } else {
                self.late += 1;
            }
            return;
        }
        self.lines.push(StageLine {
            t_ns,
            stage: STAGE_RELAY,
            block: None,
            stream: Some(stream),
            bytes: None,
        });
        let seen = Seen {
            last_ns: t_ns,
            bytes,
            open: true,
        };
        if let Some((old, s)) = self.streams.insert(stream, seen) {
            if s.open {
                self.open.retain(|&o| o != old);
                self.lines.push(last_line(old, &s));
            }
        }
        self.open.push(stream);
    }

    /// Closes the streams quiet since `now_ns - quiet_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        let StageRecorder {
            streams,
            open,
            quiet_ns,
            lines,
            ..
        } = self;
        open.retain(|stream| match streams.get_mut(stream) {
            Some(s) if now_ns.saturating_sub(s.last_ns) < *quiet_ns => true,
            Some(s) => {
                s.open = false;
                lines.push(last_line(*stream, s));
                false
            }
            None => false,
        });
    }

    /// Closes every open stream (shutdown).
    pub fn finish(&mut self) {
        self.tick(u64::MAX);
    }

    /// The records made since the last call, in the order they were made.
    pub fn drain(&mut self) -> std::vec::Drain<'_, StageLine<'static>> {
        self.lines.drain(..)
    }

    /// Streams not closed yet.
    pub fn open_streams(&self) -> usize {
        self.open.len()
    }

    /// Fragments that arrived after their stream was closed (not recorded).
    pub fn late_fragments(&self) -> u64 {
        self.late
    }
}

fn last_line(stream: u64, s: &Seen) -> StageLine<'static> {
    StageLine {
        t_ns: s.last_ns,
        stage: STAGE_RELAY_LAST,
        block: None,
        stream: Some(stream),
        bytes: Some(s.bytes),
    }
}

/// The stage-record file of a running relay: a [`StageRecorder`], a line buffer, the file.
#[derive(Debug)]
pub struct StageLog {
    recorder: StageRecorder,
    file: StageFile,
    next_flush: Instant,
}

impl StageLog {
    /// Opens (creates, appends to) `path`; records carry `node`.
    pub fn open(path: &Path, node: &str) -> std::io::Result<StageLog> {
        Ok(StageLog {
            recorder: StageRecorder::new(STREAM_MEMORY, QUIET_NS),
            file: StageFile::open(path, node)?,
            next_flush: Instant::now() + FLUSH_EVERY,
        })
    }

    /// A fragment of `stream` (`bytes` long) was forwarded at `t_ns` (unix ns).
    #[inline]
    pub fn fragment(&mut self, t_ns: u64, stream: u64, bytes: u64) {
        self.recorder.fragment(t_ns, stream, bytes);
    }

    /// Every [`FLUSH_EVERY`]: closes quiet streams and writes what was recorded.
    #[inline]
    pub fn poll(&mut self, now: Instant) {
        if now < self.next_flush {
            return;
        }
        self.next_flush = now + FLUSH_EVERY;
        self.recorder.tick(unix_ns());
        self.write();
    }

    /// Shutdown: closes every stream and writes everything.
    pub fn finish(&mut self) {
        self.recorder.finish();
        self.write();
    }

    /// The recorder (tests, counters).
    pub fn recorder(&self) -> &StageRecorder {
        &self.recorder
    }

    fn write(&mut self) {
        for line in self.recorder.drain() {
            self.file.push(&line);
        }
        self.file.flush();
    }
}

impl Drop for StageLog {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(r: &mut StageRecorder) -> Vec<(&'static str, u64, u64, Option<u64>)> {
        r.drain()
            .map(|l| (l.stage, l.stream.unwrap_or(u64::MAX), l.t_ns, l.bytes))
            .collect()
    }

    /// [`StageRecorder::new`]`(memory, quiet_ns)` after `fragments` (time, stream, bytes), in
    /// this order.
    fn recorder(memory: usize, quiet_ns: u64, fragments: &[(u64, u64, u64)]) -> StageRecorder {
        let mut r = StageRecorder::new(memory, quiet_ns);
        for &(t_ns, stream, bytes) in fragments {
            r.fragment(t_ns, stream, bytes);
        }
        r
    }

    #[test]
    fn one_relay_line_per_stream_at_its_first_fragment() {
        let fragments = [(100, 7, 1000), (105, 7, 1000), (110, 9, 500), (120, 7, 200)];
        let mut r = recorder(16, 1000, &fragments);
        assert_eq!(
            stages(&mut r),
            [(STAGE_RELAY, 7, 100, None), (STAGE_RELAY, 9, 110, None)]
        );
        assert_eq!(r.open_streams(), 2);
        // Quiet for less than the window: still open.
        r.tick(1100);
        assert!(stages(&mut r).is_empty());
        // Stream 7's last fragment was at 120, 9's at 110: 9 closes first.
        r.tick(1115);
        assert_eq!(stages(&mut r), [(STAGE_RELAY_LAST, 9, 110, Some(500))]);
        r.tick(1120);
        assert_eq!(stages(&mut r), [(STAGE_RELAY_LAST, 7, 120, Some(2200))]);
        assert_eq!(r.open_streams(), 0);
        // A late fragment of a closed stream makes no second record.
        r.fragment(5000, 7, 100);
        assert!(stages(&mut r).is_empty());
        assert_eq!(r.late_fragments(), 1);
    }

    #[test]
    fn memory_is_bounded_and_forgotten_open_streams_are_closed() {
        // The fourth forgets stream 1 (the oldest), which is still open.
        let mut r = recorder(2, 1000, &[(1, 1, 10), (2, 2, 10), (3, 1, 10), (4, 3, 10)]);
        assert_eq!(
            stages(&mut r),
            [
                (STAGE_RELAY, 1, 1, None),
                (STAGE_RELAY, 2, 2, None),
                (STAGE_RELAY, 3, 4, None),
                (STAGE_RELAY_LAST, 1, 3, Some(20)),
            ]
        );
        assert_eq!(r.open_streams(), 2);
        for s in 10..1000 {
            r.fragment(s, s, 1);
        }
        assert!(r.open_streams() <= 2);
        r.finish();
        let left = stages(&mut r);
        assert_eq!(left.iter().filter(|l| l.0 == STAGE_RELAY).count(), 990);
        assert_eq!(left.iter().filter(|l| l.0 == STAGE_RELAY_LAST).count(), 992);
        assert_eq!(r.open_streams(), 0);
    }

    #[test]
    fn out_of_order_times_keep_the_latest_as_last() {
        // The second from another core's batch, stamped earlier.
        let mut r = recorder(4, 10, &[(50, 1, 1), (40, 1, 1)]);
        r.finish();
        assert_eq!(
            stages(&mut r),
            [
                (STAGE_RELAY, 1, 50, None),
                (STAGE_RELAY_LAST, 1, 50, Some(2))
            ]
        );
    }

    #[test]
    fn the_log_writes_on_finish() {
        let path = crate::testkit::stage_log_path("unit");
        {
            let mut log = StageLog::open(&path, "relay9").unwrap();
            log.fragment(10, 3, 100);
            log.fragment(11, 3, 100);
            log.poll(Instant::now()); // not due yet: nothing written
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        } // dropped: finish
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            text,
            "{\"t_ns\":10,\"node\":\"relay9\",\"stage\":\"relay\",\"stream\":3}\n\
             {\"t_ns\":11,\"node\":\"relay9\",\"stage\":\"relay_last\",\"stream\":3,\"bytes\":200}\n"
        );
    }
}
