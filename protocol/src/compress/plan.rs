//! Choosing the ID groups of a compressed block (docs/protocol.md §6.3.1).
//!
//! Every reference costs `ceil(log2(window))` bits where the window is the total length of the
//! groups, and every group costs a few header bytes. With the block's short IDs sorted, cutting
//! the window at the `k` widest holes between neighbours is the best `k`-cut (it removes the
//! most unused IDs), so the encoder tries every `k` and keeps the cheapest. Holes between relay
//! ranges and around transactions that waited hours are the widest and go first.

use super::format::{ref_width, IdGroup};

/// Header bytes charged per group when choosing: a gap varint (up to 5 bytes across relay
/// ranges, 1-3 within one) and a length varint (1-2). An estimate: the encoder's output is
/// exact, only the choice uses it.
const GROUP_COST_BITS: u64 = 8 * 5;

/// The groups for these IDs: `ids` sorted ascending, without duplicates.
pub fn choose_groups(ids: &[u32]) -> Vec<IdGroup> {
    let (Some(&lo), Some(&hi)) = (ids.first(), ids.last()) else {
        return Vec::new();
    };
    let n = ids.len() as u64;
    // Hole after ids[i]: unused IDs between ids[i] and ids[i + 1].
    let mut holes: Vec<(u64, usize)> = ids
        .windows(2)
        .enumerate()
        .map(|(i, w)| (u64::from(w[1] - w[0] - 1), i))
        .filter(|&(hole, _)| hole > 0)
        .collect();
    holes.sort_unstable_by(|a, b| b.cmp(a));

    let mut span = u64::from(hi - lo) + 1;
    let mut best = (n * u64::from(ref_width(span)) + GROUP_COST_BITS, 0usize);
    for (k, &(hole, _)) in holes.iter().enumerate() {
        span -= hole;
        let cost = n * u64::from(ref_width(span)) + GROUP_COST_BITS * (k as u64 + 2);
        if cost < best.0 {
            best = (cost, k + 1);
        }
    }

    let mut cuts: Vec<usize> = holes[..best.1].iter().map(|&(_, i)| i).collect();
    cuts.sort_unstable();
    let mut groups = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0usize;
    for cut in cuts.into_iter().chain(std::iter::once(ids.len() - 1)) {
        groups.push(IdGroup {
            first: ids[start],
            len: ids[cut] - ids[start] + 1,
        });
        start = cut + 1;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_far_ranges_and_outliers() {
        let mut ids: Vec<u32> = (1000..1400).step_by(2).collect();
        ids.extend((0x8000_0000u32..0x8000_0300).step_by(3));
        ids.push(5); // a transaction that waited hours
        ids.sort_unstable();
        let groups = choose_groups(&ids);
        assert_eq!(
            groups,
            [
                IdGroup { first: 5, len: 1 },
                IdGroup {
                    first: 1000,
                    len: 399
                },
                IdGroup {
                    first: 0x8000_0000,
                    len: 0x2fe
                },
            ]
        );
        assert!(choose_groups(&[]).is_empty());
        assert_eq!(choose_groups(&[7]), [IdGroup { first: 7, len: 1 }]);
    }
}
