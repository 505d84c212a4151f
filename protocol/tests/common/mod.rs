//! Shared by the protocol's simulation tests (`transport_sim`, `pipeline_real_blocks`).
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Fake time's next step: the earliest of `deadlines`, but at least 1 µs after `now` so the
/// loop always moves; 1 ms on when nothing is due.
pub fn next_instant(now: Instant, deadlines: impl IntoIterator<Item = Option<Instant>>) -> Instant {
    let next = deadlines.into_iter().flatten().min();
    next.map_or(now + Duration::from_millis(1), |t| {
        t.max(now + Duration::from_micros(1))
    })
}
