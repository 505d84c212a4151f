//! Stage records for the propagation report (`perf/README.md`, "Stage records"): when each
//! stage of a block finished at this gateway. Off unless [`super::CoreConfig::stage_records`];
//! the driver drains them with [`Gateway::poll_stage`] and writes JSON lines.
//!
//! Times are `max(now, Instant::now())`: the caller's `now` can be a little stale after a CPU
//! stage (compression, FEC) in the same loop turn, and a stage record should say when the
//! stage really finished. Like the CPU stage durations, this clock read never changes what the
//! state machine does.

use std::collections::VecDeque;
use std::time::Instant;

use bitcoin::BlockHash;

use super::Gateway;

/// A block's stages, in the order of `perf/README.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    BlockIn,
    Compress,
    Seal,
    Fec,
    FirstFragmentOut,
    LastFragmentOut,
    FirstFragmentIn,
    LastFragmentIn,
    ReceiptSent,
    Receipts,
    KeyRelease,
    KeyIn,
    Decode,
    Deliver,
}

impl Stage {
    /// The stage's name in the records.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::BlockIn => "block_in",
            Stage::Compress => "compress",
            Stage::Seal => "seal",
            Stage::Fec => "fec",
            Stage::FirstFragmentOut => "first_fragment_out",
            Stage::LastFragmentOut => "last_fragment_out",
            Stage::FirstFragmentIn => "first_fragment_in",
            Stage::LastFragmentIn => "last_fragment_in",
            Stage::ReceiptSent => "receipt_sent",
            Stage::Receipts => "receipts",
            Stage::KeyRelease => "key_release",
            Stage::KeyIn => "key_in",
            Stage::Decode => "decode",
            Stage::Deliver => "deliver",
        }
    }
}

/// One stage of one block finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageRecord {
    pub at: Instant,
    pub stage: Stage,
    /// Where this gateway knows it (origin: always; receiver: from `decode` on).
    pub block: Option<BlockHash>,
    /// The stream ID; `None` on `block_in` (the stream is chosen after it).
    pub stream: Option<u64>,
    /// On `last_fragment_out`: bytes of every datagram sent for the block's first pass (all
    /// destinations), i.e. bytes on the wire per block.
    pub bytes: Option<u64>,
}

/// Records kept when nobody drains them.
const MAX_STAGE_RECORDS: usize = 4096;

/// The stage records not yet drained, bounded; nothing is kept unless enabled.
pub(super) struct StageLog {
    enabled: bool,
    records: VecDeque<StageRecord>,
}

impl StageLog {
    pub(super) fn new(enabled: bool) -> Self {
        StageLog {
            enabled,
            records: VecDeque::new(),
        }
    }

    pub(super) fn record(
        &mut self,
        now: Instant,
        stage: Stage,
        stream: Option<u64>,
        block: Option<BlockHash>,
        bytes: Option<u64>,
    ) {
        if !self.enabled || self.records.len() >= MAX_STAGE_RECORDS {
            return;
        }
        self.records.push_back(StageRecord {
            at: now.max(Instant::now()),
            stage,
            block,
            stream,
            bytes,
        });
    }
}

impl Gateway {
    /// The next stage record (only with [`super::CoreConfig::stage_records`]).
    pub fn poll_stage(&mut self) -> Option<StageRecord> {
        self.stages.records.pop_front()
    }
}
