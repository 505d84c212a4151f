//! A model of how relays assign short IDs to a block's transactions (docs/protocol.md §6.5),
//! for the compression table, the tests and the benchmarks. Not used on the wire.
//!
//! There is no capture of real mempool traffic with relay IDs, so the model builds one:
//!
//! - The block's coinbase is never announced (it is sent whole).
//! - Every other transaction is announced within `window` (600 s) before the block, as a Poisson
//!   stream (arrival times uniform over the window, the count being fixed), except a fraction
//!   `old_fraction` that arrived up to `old_max` (6 h) earlier and waited in the mempool.
//! - Interleaved with them, `(traffic_multiple - 1) x` as many other transactions arrive in the
//!   window that are NOT in the block (they take IDs all the same).
//! - `relays` relays see the traffic; each transaction goes to one of them, uniformly (the
//!   first that saw it), which gives it the next ID of its own range
//!   ([`ShortIdRange::for_relay`]) in arrival order. Each relay's counter starts the window at
//!   a random point of its range; old transactions took the IDs its counter had then, at the
//!   same traffic rate.
//! - A child is never announced before a parent in the same block (in-block parents come first
//!   in block order; a child's arrival is pushed after its parent's).
//!
//! Randomness comes from the caller (`rng` returns uniform `u64`s), so runs are reproducible
//! with a seeded generator and this library needs no RNG dependency.

use std::collections::{HashMap, HashSet};

use crate::chain::ChainAdapter;
use crate::shortid::{OnExhaustion, ShortId, ShortIdAllocator, ShortIdRange};

/// The block positions of each transaction's in-block parents: the `parents` that
/// [`ArrivalModel::assign`] takes.
pub fn in_block_parents<C: ChainAdapter>(block: &C::Block) -> Vec<Vec<usize>> {
    let txs = C::transactions(block);
    let position: HashMap<[u8; 32], usize> = txs
        .iter()
        .enumerate()
        .map(|(i, tx)| (C::tx_ids(tx).txid, i))
        .collect();
    txs.iter()
        .map(|tx| {
            C::parent_txids(tx)
                .iter()
                .filter_map(|t| position.get(t).copied())
                .collect()
        })
        .collect()
}

/// Parameters of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalModel {
    /// Relays that assign IDs (1 to 3 in the tables).
    pub relays: u32,
    /// Transactions the mempool sees in the window, as a multiple of the block's announced ones.
    pub traffic_multiple: f64,
    /// Fraction of the block's transactions that arrived before the window.
    pub old_fraction: f64,
    /// The window before the block, seconds.
    pub window_s: f64,
    /// How long before the window the oldest transactions arrived, seconds.
    pub old_max_s: f64,
}

impl ArrivalModel {
    /// The model of the issue: 3 relays, 2x traffic, 1% waited hours.
    pub const BASELINE: ArrivalModel = ArrivalModel {
        relays: 3,
        traffic_multiple: 2.0,
        old_fraction: 0.01,
        window_s: 600.0,
        old_max_s: 6.0 * 3600.0,
    };

    /// Assign short IDs to a block's transactions.
    ///
    /// `parents[i]` are the block positions of transaction `i`'s in-block parents (all below `i`).
    /// Returns one entry per transaction: `None` for the coinbase (position 0).
    pub fn assign(
        &self,
        parents: &[Vec<usize>],
        rng: &mut dyn FnMut() -> u64,
    ) -> Vec<Option<ShortId>> {
        let n = parents.len();
        let relays = self.relays.max(1);
        let mut uniform = || (rng() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);

        // Arrival time (seconds, 0 = window start, negative = before) and relay of each tx.
        let mut time = vec![0.0f64; n];
        let mut relay = vec![0u32; n];
        let mut old = vec![false; n];
        for i in 1..n {
            let has_window_parent = parents[i].iter().any(|&p| p != 0 && p < i && !old[p]);
            old[i] = !has_window_parent && uniform() < self.old_fraction;
            time[i] = if old[i] {
                -uniform() * self.old_max_s
            } else {
                uniform() * self.window_s
            };
            // Children after parents.
            for &p in &parents[i] {
                if p != 0 && p < i && time[i] <= time[p] {
                    time[i] = time[p] + 1e-3;
                }
            }
            relay[i] = ((uniform() * f64::from(relays)) as u32).min(relays - 1);
        }

        let announced = n.saturating_sub(1);
        let background =
            ((self.traffic_multiple - 1.0).max(0.0) * announced as f64).round() as usize;
        // Per-relay traffic rate in the window, also used for the years before it.
        let total_in_window = (announced + background) as f64;
        let rate_per_relay = total_in_window / self.window_s / f64::from(relays);

        // Window events: (time, relay, Some(block position) | None for background).
        let mut events: Vec<(f64, u32, Option<usize>)> = Vec::with_capacity(announced + background);
        for i in 1..n {
            if !old[i] {
                events.push((time[i], relay[i], Some(i)));
            }
        }
        for _ in 0..background {
            let r = ((uniform() * f64::from(relays)) as u32).min(relays - 1);
            events.push((uniform() * self.window_s, r, None));
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0));

        let mut allocators: Vec<ShortIdAllocator> = (0..relays)
            .map(|r| {
                let range = ShortIdRange::for_relay(r, relays).expect("r < relays, relays >= 1");
                // Start anywhere in the first half of the range, far enough from its start that
                // hours of earlier IDs fit below.
                let offset = (1u64 << 24) + (uniform() * (range.len() / 2) as f64) as u64;
                ShortIdAllocator::starting_at(range, offset, OnExhaustion::Wrap)
            })
            .collect();
        let starts: Vec<u64> = allocators
            .iter()
            .map(|a| u64::from(a.range().first()) + (a.range().len() - a.remaining()))
            .collect();

        let mut ids = vec![None; n];
        for (_, r, pos) in events {
            let id = allocators[r as usize]
                .next_id()
                .expect("wrapping allocator never fails");
            if let Some(i) = pos {
                ids[i] = Some(id);
            }
        }
        // Old transactions: the ID the relay's counter had `rate * age` transactions ago.
        let mut taken: HashSet<u32> = HashSet::new();
        for i in 1..n {
            if old[i] {
                let r = relay[i] as usize;
                let back = (rate_per_relay * -time[i]) as u64 + 1;
                let mut id = starts[r]
                    .saturating_sub(back)
                    .max(u64::from(allocators[r].range().first()));
                // Below the window's IDs, away from other old ones.
                while taken.contains(&(id as u32)) {
                    id -= 1;
                }
                taken.insert(id as u32);
                ids[i] = Some(ShortId(id as u32));
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s ^ (s >> 29)
        }
    }

    #[test]
    fn ids_are_distinct_and_parents_first() {
        let mut parents = vec![Vec::new(); 500];
        parents[10] = vec![3];
        parents[11] = vec![10];
        let model = ArrivalModel {
            old_fraction: 0.05,
            ..ArrivalModel::BASELINE
        };
        let ids = model.assign(&parents, &mut lcg(7));
        assert_eq!(ids[0], None);
        let mut all: Vec<u32> = ids[1..].iter().map(|id| id.unwrap().0).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 499);
        // One relay, nobody old: IDs follow arrival, and a child arrives after its parent.
        let one = ArrivalModel {
            relays: 1,
            old_fraction: 0.0,
            ..ArrivalModel::BASELINE
        };
        let ids = one.assign(&parents, &mut lcg(9));
        assert!(ids[3] < ids[10] && ids[10] < ids[11]);
    }
}
