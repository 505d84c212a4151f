//! Per-core counters: plain `u64`s on the data core, published to cache-line-aligned atomics in
//! the housekeeping branch only (Firedancer's and l2fwd's shape: no shared write per packet).
//!
//! Another thread (the Prometheus exporter, a test, the benchmark) reads a [`CoreCounters`] at
//! any time with [`CoreCounters::snapshot`]; values lag the data core by at most one drain
//! interval (~100 µs) and are exact after the pipeline stopped.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a frame was dropped. Each reason is its own counter; none is ever logged per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    EthMalformed,
    /// Addressed to another MAC (promiscuous ports see everything).
    NotOurMac,
    /// Neither IPv4 nor ARP (IPv6, VLAN tags, LLDP...).
    OtherEthertype,
    /// ARP that is not an Ethernet/IPv4 request or reply for our address.
    ArpOther,
    /// IPv4 header shorter than announced, wrong version, total length past the frame.
    IpMalformed,
    /// IPv4 header checksum wrong.
    IpChecksum,
    /// IPv4 destination is not the relay's address.
    NotOurIp,
    /// An IP fragment: Photon datagrams never need fragmentation (§1.1).
    IpFragment,
    /// An IP protocol other than UDP and ICMP.
    OtherProtocol,
    /// ICMP other than a well-formed echo request.
    IcmpOther,
    /// UDP length field wrong.
    UdpMalformed,
    /// UDP to another port.
    WrongPort,
    /// UDP payload without Photon's magic.
    NotPhoton,
    /// A Photon version this relay does not speak.
    BadVersion,
    /// Photon header or fragment fields inconsistent (truncated, too long, index >= count...).
    PhotonMalformed,
    /// A Photon message type this relay does not know.
    UnknownType,
    /// Fragment from a node id that is not in the forwarding table.
    UnknownSender,
    /// Fragment from a known peer with no session key yet (handshake not done).
    NoSession,
    /// Hop tag does not verify under the sender's key.
    BadHopTag,
    /// Fragment from a gateway of a stream that is not under its prefix (§4.1.6): another
    /// member's stream, which a gateway may not inject into.
    ForeignStream,
    /// Fragment that already travelled `max_hops` relays.
    HopLimit,
    /// Fragment with nobody to forward it to.
    NoDestination,
    /// A received buffer in several segments (never for frames <= 2 KB).
    Multisegment,
    /// Header mbuf pool empty: one fan-out copy lost.
    NoMbuf,
    /// TX queue full at flush: frames freed.
    TxFull,
    /// Control ring full: a control message lost.
    ControlFull,
    /// Repair ring full (or no header mbuf for the note): a forwarded fragment not handed to
    /// the control core's repair cache.
    RepairRingFull,
}

/// Every counter a pipeline keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Frames received.
    RxPackets,
    /// Bytes received (frame lengths).
    RxBytes,
    /// Frames handed to a TX queue (forwarded copies, ARP/ICMP answers, control frames).
    TxPackets,
    /// Bytes handed to a TX queue.
    TxBytes,
    /// Block fragments accepted and forwarded (each once, whatever the fan-out).
    Fragments,
    /// Forwarded copies (sum of the fan-out over accepted fragments).
    FanoutCopies,
    /// Fragments seen before (another path through the mesh): dropped.
    DedupHits,
    /// Photon control messages passed to the control path.
    ToControl,
    /// Frames the control path sent through this core.
    FromControl,
    /// ARP requests answered.
    ArpReplies,
    /// ICMP echo requests answered.
    IcmpReplies,
    /// Forwarded fragments handed to the control core's repair cache (zero-copy references).
    ToRepairCache,
    /// Store-and-forward: admitted fragments held until their stream could be rebuilt.
    HoldHeld,
    /// Store-and-forward: held fragments released to the fan-out.
    HoldReleased,
    /// Store-and-forward: streams released complete (K shards and the whole manifest held).
    HoldStreamsComplete,
    /// Store-and-forward: streams released incomplete after `relay.hold_timeout_ms`.
    HoldStreamsTimeout,
    /// Store-and-forward: streams released incomplete to stay within the hold bounds.
    HoldStreamsOverflow,
    /// A drop, by reason.
    Drop(DropReason),
}

const DROP_REASONS: [DropReason; 27] = [
    DropReason::EthMalformed,
    DropReason::NotOurMac,
    DropReason::OtherEthertype,
    DropReason::ArpOther,
    DropReason::IpMalformed,
    DropReason::IpChecksum,
    DropReason::NotOurIp,
    DropReason::IpFragment,
    DropReason::OtherProtocol,
    DropReason::IcmpOther,
    DropReason::UdpMalformed,
    DropReason::WrongPort,
    DropReason::NotPhoton,
    DropReason::BadVersion,
    DropReason::PhotonMalformed,
    DropReason::UnknownType,
    DropReason::UnknownSender,
    DropReason::NoSession,
    DropReason::BadHopTag,
    DropReason::ForeignStream,
    DropReason::HopLimit,
    DropReason::NoDestination,
    DropReason::Multisegment,
    DropReason::NoMbuf,
    DropReason::TxFull,
    DropReason::ControlFull,
    DropReason::RepairRingFull,
];

const PLAIN: usize = 17;

/// Number of counters.
pub const COUNTERS: usize = PLAIN + DROP_REASONS.len();

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 27] = DROP_REASONS;

    /// A snake_case name for metrics (`drop_<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::EthMalformed => "eth_malformed",
            DropReason::NotOurMac => "not_our_mac",
            DropReason::OtherEthertype => "other_ethertype",
            DropReason::ArpOther => "arp_other",
            DropReason::IpMalformed => "ip_malformed",
            DropReason::IpChecksum => "ip_checksum",
            DropReason::NotOurIp => "not_our_ip",
            DropReason::IpFragment => "ip_fragment",
            DropReason::OtherProtocol => "other_protocol",
            DropReason::IcmpOther => "icmp_other",
            DropReason::UdpMalformed => "udp_malformed",
            DropReason::WrongPort => "wrong_port",
            DropReason::NotPhoton => "not_photon",
            DropReason::BadVersion => "bad_version",
            DropReason::PhotonMalformed => "photon_malformed",
            DropReason::UnknownType => "unknown_type",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::NoSession => "no_session",
            DropReason::BadHopTag => "bad_hop_tag",
            DropReason::ForeignStream => "foreign_stream",
            DropReason::HopLimit => "hop_limit",
            DropReason::NoDestination => "no_destination",
            DropReason::Multisegment => "multisegment",
            DropReason::NoMbuf => "no_mbuf",
            DropReason::TxFull => "tx_full",
            DropReason::ControlFull => "control_full",
            DropReason::RepairRingFull => "repair_ring_full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl Counter {
    /// Every counter, in index order.
    pub fn all() -> impl Iterator<Item = Counter> {
        const PLAIN_ALL: [Counter; PLAIN] = [
            Counter::RxPackets,
            Counter::RxBytes,
            Counter::TxPackets,
            Counter::TxBytes,
            Counter::Fragments,
            Counter::FanoutCopies,
            Counter::DedupHits,
            Counter::ToControl,
            Counter::FromControl,
            Counter::ArpReplies,
            Counter::IcmpReplies,
            Counter::ToRepairCache,
            Counter::HoldHeld,
            Counter::HoldReleased,
            Counter::HoldStreamsComplete,
            Counter::HoldStreamsTimeout,
            Counter::HoldStreamsOverflow,
        ];
        PLAIN_ALL
            .into_iter()
            .chain(DropReason::ALL.into_iter().map(Counter::Drop))
    }

    /// Index into the counter arrays.
    pub const fn index(self) -> usize {
        match self {
            Counter::RxPackets => 0,
            Counter::RxBytes => 1,
            Counter::TxPackets => 2,
            Counter::TxBytes => 3,
            Counter::Fragments => 4,
            Counter::FanoutCopies => 5,
            Counter::DedupHits => 6,
            Counter::ToControl => 7,
            Counter::FromControl => 8,
            Counter::ArpReplies => 9,
            Counter::IcmpReplies => 10,
            Counter::ToRepairCache => 11,
            Counter::HoldHeld => 12,
            Counter::HoldReleased => 13,
            Counter::HoldStreamsComplete => 14,
            Counter::HoldStreamsTimeout => 15,
            Counter::HoldStreamsOverflow => 16,
            Counter::Drop(r) => PLAIN + r.index(),
        }
    }

    /// A snake_case metric name: `rx_packets`, ..., `drop_bad_hop_tag`.
    pub fn name(self) -> String {
        match self {
            Counter::RxPackets => "rx_packets".into(),
            Counter::RxBytes => "rx_bytes".into(),
            Counter::TxPackets => "tx_packets".into(),
            Counter::TxBytes => "tx_bytes".into(),
            Counter::Fragments => "fragments".into(),
            Counter::FanoutCopies => "fanout_copies".into(),
            Counter::DedupHits => "dedup_hits".into(),
            Counter::ToControl => "to_control".into(),
            Counter::FromControl => "from_control".into(),
            Counter::ArpReplies => "arp_replies".into(),
            Counter::IcmpReplies => "icmp_replies".into(),
            Counter::ToRepairCache => "to_repair_cache".into(),
            Counter::HoldHeld => "hold_held".into(),
            Counter::HoldReleased => "hold_released".into(),
            Counter::HoldStreamsComplete => "hold_streams_complete".into(),
            Counter::HoldStreamsTimeout => "hold_streams_timeout".into(),
            Counter::HoldStreamsOverflow => "hold_streams_overflow".into(),
            Counter::Drop(r) => format!("drop_{}", r.name()),
        }
    }
}

/// The data core's own counters: plain integers, bumped per packet with no atomics.
#[derive(Debug, Clone)]
pub struct LocalCounters {
    values: [u64; COUNTERS],
}

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters {
            values: [0; COUNTERS],
        }
    }
}

impl LocalCounters {
    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        self.values[c.index()] = self.values[c.index()].wrapping_add(n);
    }

    #[inline]
    pub fn inc(&mut self, c: Counter) {
        self.add(c, 1);
    }

    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.inc(Counter::Drop(r));
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c.index()]
    }

    /// Sets a counter (for cumulative counts kept elsewhere, e.g. [`crate::forward::hold::HoldStats`]).
    #[inline]
    pub fn set(&mut self, c: Counter, v: u64) {
        self.values[c.index()] = v;
    }

    /// Copies a holder's cumulative counts into the hold counters.
    pub fn set_hold(&mut self, s: &crate::forward::hold::HoldStats) {
        self.set(Counter::HoldHeld, s.held);
        self.set(Counter::HoldReleased, s.released);
        self.set(Counter::HoldStreamsComplete, s.streams_complete);
        self.set(Counter::HoldStreamsTimeout, s.streams_timeout);
        self.set(Counter::HoldStreamsOverflow, s.streams_overflow);
    }

    /// Sum of all drop counters.
    /// The line both backends log when the relay has stopped.
    pub fn log_stopped(&self) {
        tracing::info!(
            rx = self.get(Counter::RxPackets),
            fragments = self.get(Counter::Fragments),
            copies = self.get(Counter::FanoutCopies),
            drops = self.drops(),
            "photon-relay stopped cleanly"
        );
    }

    pub fn drops(&self) -> u64 {
        DropReason::ALL
            .iter()
            .map(|&r| self.get(Counter::Drop(r)))
            .sum()
    }
}

/// One core's published counters, on their own cache lines so cores never share a line.
/// Written only by that core's housekeeping (Relaxed stores), read by anyone (Relaxed loads).
#[repr(align(64))]
#[derive(Debug)]
pub struct CoreCounters {
    values: [AtomicU64; COUNTERS],
    table_generation: AtomicU64,
}

impl Default for CoreCounters {
    fn default() -> Self {
        CoreCounters {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            table_generation: AtomicU64::new(0),
        }
    }
}

impl CoreCounters {
    /// Records the forwarding-table generation the core switched to (once per switch).
    pub fn set_table_generation(&self, generation: u64) {
        self.table_generation.store(generation, Ordering::Release);
    }

    /// The table generation the core forwards with: once every core reports the generation
    /// [`crate::forward::publish::Publisher::publish`] returned, the new table is live everywhere (e.g.
    /// a registration can be acknowledged). Frames already received may still have used the
    /// previous table.
    pub fn table_generation(&self) -> u64 {
        self.table_generation.load(Ordering::Acquire)
    }

    /// Copies the data core's counters out (housekeeping branch only).
    pub fn publish(&self, local: &LocalCounters) {
        for (cell, &v) in self.values.iter().zip(local.values.iter()) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// The last published values.
    pub fn snapshot(&self) -> LocalCounters {
        LocalCounters {
            values: std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed)),
        }
    }

    /// One counter's last published value.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c.index()].load(Ordering::Relaxed)
    }
}

/// Sums counters over cores.
pub fn total<'a>(cores: impl IntoIterator<Item = &'a CoreCounters>) -> LocalCounters {
    let mut sum = LocalCounters::default();
    for core in cores {
        let s = core.snapshot();
        for (a, b) in sum.values.iter_mut().zip(s.values.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        let all: Vec<Counter> = Counter::all().collect();
        assert_eq!(all.len(), COUNTERS);
        for (i, c) in all.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
        let mut names: Vec<String> = all.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COUNTERS);
    }

    #[test]
    fn publish_and_read_from_another_thread() {
        let shared = std::sync::Arc::new(CoreCounters::default());
        let mut local = LocalCounters::default();
        local.inc(Counter::RxPackets);
        local.drop(DropReason::BadHopTag);
        local.drop(DropReason::BadHopTag);
        assert_eq!(
            shared.get(Counter::RxPackets),
            0,
            "nothing visible before publish"
        );
        shared.publish(&local);
        let reader = shared.clone();
        let seen = std::thread::spawn(move || reader.snapshot())
            .join()
            .unwrap();
        assert_eq!(seen.get(Counter::RxPackets), 1);
        assert_eq!(seen.get(Counter::Drop(DropReason::BadHopTag)), 2);
        assert_eq!(seen.drops(), 2);
        assert_eq!(total([&*shared, &*shared]).get(Counter::RxPackets), 2);
    }
}
