//! Next-hop resolution by ARP for the DPDK backend, sans-IO: which next hops to ask about, when,
//! and what was learned. The caller passes `now_ms`; nothing here sends or reads a clock.
//!
//! - [`ArpResolver::want`] registers a next hop (a peer relay's own address when it is on-link,
//!   else `relay.gateway`) and the port that reaches it. Static `[[neighbour]]` entries are
//!   never asked about, and always win over what is learned.
//! - [`ArpResolver::due`] says which unresolved next hops to ask now: the first request at once,
//!   then again after [`FIRST_RETRY_MS`], doubling up to [`MAX_RETRY_MS`] (a peer relay that
//!   is down gets one request per 30 s, forever, rather than being given up on).
//! - [`ArpResolver::learn`] takes (IP, MAC) from an ARP reply, a gratuitous ARP or a request
//!   addressed to us (a request from X tells X's MAC); only wanted next hops are remembered,
//!   so memory is bounded by [`MAX_ENTRIES`] whatever arrives. It says when a MAC became known
//!   or changed: the control path then publishes a table with the new header templates.
//!
//! Learned entries do not age out (a next hop that stops answering keeps its last MAC: the
//! traffic to it is what FEC and repairs are for), but they are refreshed: a resolved next hop
//! is asked again every [`REFRESH_MS`], so one that changes its MAC is followed within that
//! time even if it sends no gratuitous ARP, and at once when it does (or replies, or asks for
//! ours).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Next hops tracked at most (the configured peer relays' next hops: a handful).
pub const MAX_ENTRIES: usize = 1024;
/// Delay before the second request for an unresolved next hop.
pub const FIRST_RETRY_MS: u64 = 1000;
/// Longest delay between requests for an unresolved next hop.
pub const MAX_RETRY_MS: u64 = 30_000;
/// How often a resolved next hop is asked again (Linux's neighbour table re-probes an entry
/// after ~30 s of reachability, once it is used).
pub const REFRESH_MS: u64 = 60_000;

/// One next hop to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    port: u16,
    mac: Option<[u8; 6]>,
    /// Requests sent since it was last unresolved.
    attempts: u32,
    /// When the next request is due: a retry while unresolved, a refresh once resolved (0
    /// right after a MAC was learned: the next [`ArpResolver::due`] schedules the refresh,
    /// since `learn` is not told the time).
    next_ms: u64,
}

/// An ARP request to send: who-has `ip`, out of relay port `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpQuery {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// What the resolver did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArpStats {
    /// Requests [`ArpResolver::due`] asked to send.
    pub requests_sent: u64,
    /// MACs of wanted next hops learned or changed.
    pub replies_learned: u64,
    /// (IP, MAC) pairs offered to [`ArpResolver::learn`] that were not wanted, static, or
    /// unchanged.
    pub ignored: u64,
}

/// Why a next hop was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WantError {
    #[error("{0} has a static [[neighbour]] entry")]
    Static(Ipv4Addr),
    #[error("more than {MAX_ENTRIES} next hops to resolve")]
    Full,
}

/// The resolver's state. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct ArpResolver {
    statics: BTreeMap<Ipv4Addr, [u8; 6]>,
    entries: BTreeMap<Ipv4Addr, Entry>,
    /// Earliest `next_ms` of the unresolved entries (`u64::MAX`: none).
    next_due_ms: u64,
    stats: ArpStats,
}

impl ArpResolver {
    /// A resolver with the static `[[neighbour]]` entries (which win over learned MACs).
    pub fn new(statics: impl IntoIterator<Item = (Ipv4Addr, [u8; 6])>) -> ArpResolver {
        ArpResolver {
            statics: statics.into_iter().collect(),
            entries: BTreeMap::new(),
            next_due_ms: u64::MAX,
            stats: ArpStats::default(),
        }
    }

    /// Resolve `ip`, reached through relay port `port`, by ARP; the first request is due at
    /// `now_ms`. Wanting a next hop again is a no-op (the first port stays).
    pub fn want(&mut self, ip: Ipv4Addr, port: u16, now_ms: u64) -> Result<(), WantError> {
        if self.statics.contains_key(&ip) {
            return Err(WantError::Static(ip));
        }
        if self.entries.contains_key(&ip) {
            return Ok(());
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(WantError::Full);
        }
        self.entries.insert(
            ip,
            Entry {
                port,
                mac: None,
                attempts: 0,
                next_ms: now_ms,
            },
        );
        self.next_due_ms = self.next_due_ms.min(now_ms);
        Ok(())
    }

    /// Appends the requests due at `now_ms` to `out` and schedules their retries (backoff from
    /// [`FIRST_RETRY_MS`] doubling to [`MAX_RETRY_MS`]) and the resolved next hops' refreshes
    /// (every [`REFRESH_MS`]). Cheap when nothing is due.
    pub fn due(&mut self, now_ms: u64, out: &mut Vec<ArpQuery>) {
        if now_ms < self.next_due_ms {
            return;
        }
        let mut next = u64::MAX;
        for (&ip, e) in self.entries.iter_mut() {
            if e.mac.is_some() {
                if e.next_ms == 0 {
                    // Just learned: refresh one period from now.
                    e.next_ms = now_ms.saturating_add(REFRESH_MS);
                } else if e.next_ms <= now_ms {
                    out.push(ArpQuery { ip, port: e.port });
                    self.stats.requests_sent += 1;
                    e.next_ms = now_ms.saturating_add(REFRESH_MS);
                }
                next = next.min(e.next_ms);
                continue;
            }
            if e.next_ms <= now_ms {
                out.push(ArpQuery { ip, port: e.port });
                self.stats.requests_sent += 1;
                let shift = e.attempts.min(16);
                let wait = FIRST_RETRY_MS.saturating_mul(1 << shift).min(MAX_RETRY_MS);
                e.attempts = e.attempts.saturating_add(1);
                e.next_ms = now_ms.saturating_add(wait);
            }
            next = next.min(e.next_ms);
        }
        self.next_due_ms = next;
    }

    /// Learns that `ip` is at `mac` (from an ARP reply, a gratuitous ARP or a request to us).
    /// Returns true when a wanted next hop's MAC became known or changed; static entries,
    /// next hops nobody wants, and broadcast/multicast/zero MACs are ignored.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        let bogus = mac == [0; 6] || mac[0] & 1 == 1;
        let entry = match self.entries.get_mut(&ip) {
            Some(e) if !bogus && !self.statics.contains_key(&ip) && e.mac != Some(mac) => e,
            _ => {
                self.stats.ignored += 1;
                return false;
            }
        };
        entry.mac = Some(mac);
        entry.attempts = 0;
        entry.next_ms = 0;
        self.next_due_ms = 0;
        self.stats.replies_learned += 1;
        true
    }

    /// The MAC of `ip`: the static entry if any, else what was learned.
    pub fn mac(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.statics
            .get(&ip)
            .copied()
            .or_else(|| self.entries.get(&ip).and_then(|e| e.mac))
    }

    /// Wanted next hops whose MAC is still unknown.
    pub fn unresolved(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.mac.is_none())
            .map(|(&ip, _)| ip)
    }

    /// Counters.
    pub fn stats(&self) -> ArpStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 8);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 7];

    fn due(r: &mut ArpResolver, now: u64) -> Vec<ArpQuery> {
        let mut out = Vec::new();
        r.due(now, &mut out);
        out
    }

    #[test]
    fn asks_at_once_then_backs_off_to_the_cap() {
        let mut r = ArpResolver::new([]);
        r.want(A, 1, 100).unwrap();
        assert_eq!(due(&mut r, 100), vec![ArpQuery { ip: A, port: 1 }]);
        assert!(due(&mut r, 100).is_empty(), "not twice at once");
        assert!(due(&mut r, 1099).is_empty());
        assert_eq!(due(&mut r, 1100).len(), 1, "1 s later");
        assert!(due(&mut r, 3099).is_empty());
        assert_eq!(due(&mut r, 3100).len(), 1, "2 s after that");
        assert_eq!(due(&mut r, 7100).len(), 1, "4 s");
        assert_eq!(due(&mut r, 15_100).len(), 1, "8 s");
        assert_eq!(due(&mut r, 31_100).len(), 1, "16 s");
        assert!(due(&mut r, 61_099).is_empty());
        assert_eq!(due(&mut r, 61_100).len(), 1, "capped at 30 s");
        assert_eq!(due(&mut r, 91_100).len(), 1, "and stays there");
        assert_eq!(r.stats().requests_sent, 8);
        assert_eq!(r.unresolved().collect::<Vec<_>>(), vec![A]);
    }

    #[test]
    fn learning_stops_the_requests_and_reports_changes_only() {
        let mut r = ArpResolver::new([]);
        r.want(A, 0, 0).unwrap();
        r.want(B, 0, 0).unwrap();
        assert_eq!(due(&mut r, 0).len(), 2);
        assert!(r.learn(A, MAC_A), "newly known");
        assert!(!r.learn(A, MAC_A), "unchanged");
        assert_eq!(r.mac(A), Some(MAC_A));
        assert_eq!(
            due(&mut r, 1000),
            vec![ArpQuery { ip: B, port: 0 }],
            "only the unresolved one is asked again"
        );
        assert!(r.learn(A, [2, 0, 0, 0, 0, 0x77]), "a changed MAC");
        assert_eq!(r.mac(A), Some([2, 0, 0, 0, 0, 0x77]));
        assert_eq!(r.stats().replies_learned, 2);
        assert_eq!(r.stats().ignored, 1);
    }

    #[test]
    fn resolved_next_hops_are_refreshed_and_a_new_mac_followed() {
        let mut r = ArpResolver::new([]);
        r.want(A, 2, 0).unwrap();
        assert_eq!(due(&mut r, 0).len(), 1);
        assert!(r.learn(A, MAC_A));
        assert!(
            due(&mut r, 500).is_empty(),
            "no request right after learning"
        );
        assert!(due(&mut r, 500 + REFRESH_MS - 1).is_empty());
        assert_eq!(
            due(&mut r, 500 + REFRESH_MS),
            vec![ArpQuery { ip: A, port: 2 }],
            "asked again a refresh period later"
        );
        assert_eq!(r.mac(A), Some(MAC_A), "still used meanwhile");
        assert!(!r.learn(A, MAC_A), "the same answer changes nothing");
        assert!(due(&mut r, 500 + 2 * REFRESH_MS - 1).is_empty());
        assert_eq!(due(&mut r, 500 + 2 * REFRESH_MS).len(), 1, "and again");
        // This time the answer has another MAC (a NIC replaced without a gratuitous ARP).
        assert!(r.learn(A, [2, 0, 0, 0, 1, 7]));
        assert_eq!(r.mac(A), Some([2, 0, 0, 0, 1, 7]));
        let t = 600 + 2 * REFRESH_MS;
        assert!(due(&mut r, t).is_empty());
        assert_eq!(due(&mut r, t + REFRESH_MS).len(), 1);
        assert_eq!(r.stats().requests_sent, 4);
        assert_eq!(r.unresolved().count(), 0);
    }

    #[test]
    fn static_entries_win_and_strangers_are_not_remembered() {
        let mut r = ArpResolver::new([(GW, [2, 0, 0, 0, 0, 0xfe])]);
        assert_eq!(r.want(GW, 0, 0), Err(WantError::Static(GW)));
        assert!(!r.learn(GW, [2, 9, 9, 9, 9, 9]), "static wins");
        assert_eq!(r.mac(GW), Some([2, 0, 0, 0, 0, 0xfe]));
        assert!(!r.learn(B, [2, 0, 0, 0, 0, 8]), "nobody wants B");
        assert_eq!(r.mac(B), None);
        r.want(A, 0, 0).unwrap();
        assert!(!r.learn(A, [0xff; 6]), "broadcast is not a neighbour's MAC");
        assert!(!r.learn(A, [0; 6]));
        assert!(!r.learn(A, [1, 0, 0x5e, 0, 0, 1]), "multicast");
        assert_eq!(r.mac(A), None);
        assert!(due(&mut r, 0).len() == 1 && r.stats().ignored == 5);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = ArpResolver::new([]);
        for i in 0..MAX_ENTRIES as u32 {
            r.want(Ipv4Addr::from(0x0a00_0000 + i), 0, 0).unwrap();
        }
        assert_eq!(
            r.want(Ipv4Addr::new(192, 0, 2, 1), 0, 0),
            Err(WantError::Full)
        );
        r.want(Ipv4Addr::from(0x0a00_0000), 0, 0)
            .expect("wanting a known one again is fine");
        let mut out = Vec::new();
        r.due(0, &mut out);
        assert_eq!(out.len(), MAX_ENTRIES);
    }
}
