//! One pinned per-core pipeline: RX burst → classify → forwarding sequence → TX, run to
//! completion, in the shape of DPDK's l2fwd (bursts of 32, TX buffers flushed when full, when
//! the RX queues ran dry, and on a ~100 µs drain timer; counters published only in that timer
//! branch). Nothing here allocates, locks or logs per packet. Generic over where bursts come
//! from and go to ([`RxSource`], [`TxSink`]). Design: `docs/internals/relay.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use photon_dpdk::{
    Mbuf, MbufBatch, Mempool, RingConsumer, RingProducer, RxQueue, SharedMbuf, TxQueue, MAX_BURST,
    MAX_CHAINED,
};
use photon_protocol::wire::HEADER_LEN;

use crate::forward::dedup::Dedup;
use crate::forward::hold::HoldLimits;
use crate::forward::publish::Reader;
use crate::forward::sequence::{Clocks, FanOut, Forwarder};
use crate::forward::table::{Peer, Table};
use crate::forward::{copy_tags, write_copy, write_copy_tagged};
use crate::ops::counters::{CoreCounters, Counter, DropReason, LocalCounters};
use crate::packet::{
    arp_reply_in_place, classify, icmp_echo_reply_in_place, payload_sum, Action, ForwardHeader,
    FragmentInfo, FORWARD_HEADER_LEN,
};

/// Where a pipeline receives bursts from.
pub trait RxSource: Send {
    /// Fills free slots of `batch`; returns how many arrived.
    fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize;
}

/// Where a pipeline sends bursts to.
pub trait TxSink: Send {
    /// Takes mbufs from the front of `batch`; returns how many it took (the rest stay).
    fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize;
}

impl RxSource for RxQueue {
    #[inline]
    fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        RxQueue::rx_burst(self, batch)
    }
}

impl TxSink for TxQueue {
    #[inline]
    fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        TxQueue::tx_burst(self, batch)
    }
}

impl RxSource for RingConsumer {
    #[inline]
    fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        self.dequeue(batch)
    }
}

impl TxSink for RingProducer {
    #[inline]
    fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        self.enqueue(batch)
    }
}

/// One port as a pipeline core sees it: its own RX and TX queue, and (on the core that drains
/// it) the ring of frames the control path wants sent out of this port.
pub struct PortIo<R, T> {
    pub rx: R,
    pub tx: T,
    pub from_control: Option<RingConsumer>,
}

struct PortState<R, T> {
    io: PortIo<R, T>,
    txbuf: MbufBatch,
    /// Bytes (`pkt_len` summed) of the mbufs in `txbuf`, kept as they are pushed so a flush
    /// does not read every chain's length back through the C shim.
    tx_bytes: usize,
}

/// Everything a pipeline is built from.
pub struct PipelineParts<R, T> {
    /// By port index (the table's `PeerSpec::port`).
    pub ports: Vec<PortIo<R, T>>,
    /// Pool for the per-destination header mbufs (small buffers: 78 bytes of data).
    pub header_pool: Mempool,
    /// The published forwarding table.
    pub table: Reader<Table>,
    /// The dedup table shared by all cores.
    pub dedup: Arc<Dedup>,
    /// Control messages for the control path (whole frames, so it sees the source address).
    pub to_control: RingProducer,
    /// Where this core publishes its counters.
    pub counters: Arc<CoreCounters>,
    /// TSC ticks between forced TX flushes and counter publications (~100 µs).
    pub drain_tsc: u64,
}

/// A per-core pipeline.
pub struct Pipeline<R, T> {
    /// The buffers and I/O the forwarding sequence drives ([`FanOut`]).
    io: DpdkIo<R, T>,
    /// The forwarding sequence (cut-through, or store-and-forward with its holder).
    seq: Forwarder<Mbuf>,
    table: Reader<Table>,
    dedup: Arc<Dedup>,
    to_control: RingProducer,
    ctl_buf: MbufBatch,
    counters: LocalCounters,
    published: Arc<CoreCounters>,
    rx_batch: MbufBatch,
    drain_tsc: u64,
    /// The dedup table's coarse clock, read once per poll.
    dedup_clock: u16,
    /// Idle back-off of the run loop ([`Pipeline::with_idle_sleep`]).
    idle: IdleBackoff,
}

/// The pipeline's side of the fan-out: its ports' TX buffers, the header pool, and the repair
/// notes for the control core.
struct DpdkIo<R, T> {
    ports: Vec<PortState<R, T>>,
    header_pool: Mempool,
    /// The copies of one [`Mempool::alloc_chained`] call and their ports (capacity
    /// [`MAX_CHAINED`], reused).
    copies: Vec<(Mbuf, usize)>,
    /// Where forwarded fragments go for the control core's repair cache (see
    /// [`Pipeline::with_repair_ring`]), and the notes of the current burst.
    to_repair: Option<RingProducer>,
    repair_buf: MbufBatch,
    /// The TSC of this poll (repair notes' stamp; the holder's clock).
    now_tsc: u64,
}

/// Empty RX polls in a row after which an idle-sleeping pipeline starts to sleep.
pub const IDLE_POLLS: u32 = 64;

/// The run loop's idle back-off, as DPDK's l3fwd-power: after [`IDLE_POLLS`] polls in a row
/// that received nothing, sleep `sleep` after every further empty poll, until a frame
/// arrives. `sleep` of zero (the default) never sleeps: pure busy-polling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleBackoff {
    sleep: std::time::Duration,
    empty: u32,
}

impl IdleBackoff {
    pub fn new(sleep: std::time::Duration) -> IdleBackoff {
        IdleBackoff { sleep, empty: 0 }
    }

    /// After a poll that received `received` frames: how long to sleep now, if at all.
    #[inline]
    pub fn after_poll(&mut self, received: usize) -> Option<std::time::Duration> {
        if received > 0 {
            self.empty = 0;
            return None;
        }
        self.empty = self.empty.saturating_add(1);
        (self.empty >= IDLE_POLLS).then_some(self.sleep)
    }
}

/// What one held fragment counts against `relay.hold_max_bytes` on this backend: the whole RX
/// buffer it pins, not just its datagram.
pub const HELD_FRAGMENT_BYTES: usize = Mempool::DEFAULT_DATA_ROOM as usize;

impl<R: RxSource, T: TxSink> Pipeline<R, T> {
    pub fn new(parts: PipelineParts<R, T>) -> Pipeline<R, T> {
        parts
            .counters
            .set_table_generation(parts.table.generation());
        Pipeline {
            io: DpdkIo {
                ports: parts
                    .ports
                    .into_iter()
                    .map(|io| PortState {
                        io,
                        txbuf: MbufBatch::new(),
                        tx_bytes: 0,
                    })
                    .collect(),
                header_pool: parts.header_pool,
                copies: Vec::with_capacity(MAX_CHAINED),
                to_repair: None,
                repair_buf: MbufBatch::new(),
                now_tsc: 0,
            },
            seq: Forwarder::cut_through(),
            table: parts.table,
            dedup: parts.dedup,
            to_control: parts.to_control,
            ctl_buf: MbufBatch::new(),
            counters: LocalCounters::default(),
            published: parts.counters,
            rx_batch: MbufBatch::new(),
            drain_tsc: parts.drain_tsc,
            dedup_clock: 0,
            idle: IdleBackoff::default(),
        }
    }

    /// `[dataplane] idle_sleep_us`: after [`IDLE_POLLS`] empty polls in a row, the run loop
    /// flushes its TX buffers and sleeps `sleep` after every further empty poll (l3fwd-power's
    /// heuristic), so a pipeline core shared with other processes (a 2-core testbed) does not
    /// starve them. Zero (the default): never sleeps. The price is up to `sleep` of added
    /// latency for the first frame after a quiet spell.
    pub fn with_idle_sleep(mut self, sleep: std::time::Duration) -> Self {
        self.idle = IdleBackoff::new(sleep);
        self
    }

    /// Store-and-forward ([`crate::forward::hold`], driven by [`Forwarder`]): every admitted fragment is held until its stream
    /// could be rebuilt, then fanned out exactly as cut-through would have. `limits.timeout` is
    /// in TSC ticks; each held fragment counts [`HELD_FRAGMENT_BYTES`] against
    /// `limits.max_bytes` and pins one RX-pool mbuf (size the pool for
    /// `max_bytes / HELD_FRAGMENT_BYTES` more: [`crate::dpdk::dataplane::DataPlane::start`] does).
    /// Without this call the pipeline is cut-through: one `Option` check per admitted fragment.
    pub fn with_hold(mut self, limits: HoldLimits) -> Self {
        self.seq = Forwarder::store_and_forward(limits);
        self
    }

    /// Releases held streams older than the hold timeout at `now_tsc` and fans them out (the
    /// run loop calls it in its timer branch; no-op in cut-through). Returns the streams
    /// released.
    pub fn expire_held(&mut self, now_tsc: u64) -> usize {
        let n = self
            .seq
            .expire(&mut self.io, self.table.get(), now_tsc, &mut self.counters);
        if n > 0 {
            self.flush_repair();
            self.flush_all();
        }
        n
    }

    /// Hands every forwarded fragment to the control core's repair cache through `ring`
    /// (§2.7; `docs/protocol.md` leaves where a relay keeps fragments to the relay).
    ///
    /// Zero-copy, like the fan-out: the payload buffer gets one more reference (a
    /// [`SharedMbuf`] clone), chained
    /// behind a header-pool mbuf holding the fragment's Photon header as received (the
    /// "note"); the notes of one burst go to the ring in one enqueue. The control core keeps
    /// them bounded ([`crate::control::RepairCache`]) and frees them on eviction, so each cached
    /// fragment holds one RX-pool and one header-pool mbuf: size both pools for
    /// `control.repair_cache_fragments` on top of the data path's needs
    /// ([`crate::dpdk::dataplane::DataPlane::start`] does). A fragment with a single destination then
    /// takes the chained path too (one header mbuf) instead of being rewritten in place. A full
    /// ring or an empty header pool costs the cache entry only (counted,
    /// `DropReason::RepairRingFull`), never the forwarding.
    ///
    /// The note's first segment starts with the TSC this core read at the start of the poll
    /// that forwarded the fragment ([`NOTE_STAMP_LEN`] bytes, native order), then the Photon
    /// header: the control core takes the stamp off ([`crate::dpdk::control_core`]) for the stage
    /// records, so the data core reads no wall clock and writes no file.
    pub fn with_repair_ring(mut self, ring: RingProducer) -> Self {
        self.io.to_repair = Some(ring);
        self
    }

    /// The run loop: polls until `quit` is set (sleeping when idle, if
    /// [`Pipeline::with_idle_sleep`] asked for it), then flushes and returns every mbuf it
    /// holds (TX buffers, the control batch) and publishes its final counters.
    pub fn run(&mut self, quit: &AtomicBool) {
        let mut last = photon_dpdk::rdtsc();
        while !quit.load(Ordering::Relaxed) {
            // One TSC read per iteration (rdtsc may trap to the hypervisor in VMs).
            let now = photon_dpdk::rdtsc();
            let received = self.poll_at(now);
            if now.wrapping_sub(last) >= self.drain_tsc {
                self.expire_held(now);
                self.housekeeping();
                last = now;
            }
            // One branch per poll at the default (no idle sleep).
            if !self.idle.sleep.is_zero() {
                if let Some(d) = self.idle.after_poll(received) {
                    // Nothing may wait in a TX buffer while the core sleeps.
                    self.flush_all();
                    std::thread::sleep(d);
                }
            }
        }
        self.shutdown();
    }

    /// One iteration: switch table if a new one was published, move control-path frames to TX,
    /// one RX burst per port, each processed to completion. Returns the frames received.
    #[inline]
    pub fn poll(&mut self) -> usize {
        self.poll_at(photon_dpdk::rdtsc())
    }

    /// [`Pipeline::poll`] with the TSC already read.
    #[inline]
    pub fn poll_at(&mut self, now_tsc: u64) -> usize {
        if self.table.refresh() {
            self.published.set_table_generation(self.table.generation());
        }
        self.dedup_clock = Dedup::clock(now_tsc);
        self.io.now_tsc = now_tsc;
        self.drain_control();
        let mut received = 0;
        let mut batch = std::mem::take(&mut self.rx_batch);
        let mut drained = true;
        for port in 0..self.io.ports.len() {
            let n = self.io.ports[port].io.rx.rx_burst(&mut batch);
            if n > 0 {
                received += n;
                drained &= n < MAX_BURST;
                self.process_burst(port, &mut batch);
            }
        }
        self.rx_batch = batch;
        if received > 0 && drained {
            // The RX queues are empty: nothing more would join these TX buffers soon, so send
            // now rather than on the timer (low latency at low load; full bursts at high load).
            self.flush_all();
        }
        received
    }

    /// The timer branch: flush TX buffers and publish counters.
    pub fn housekeeping(&mut self) {
        self.flush_all();
        if let Some(h) = self.seq.hold_stats() {
            self.counters.set_hold(&h);
        }
        self.published.publish(&self.counters);
    }

    /// Flushes, frees what is left and publishes the final counters.
    pub fn shutdown(&mut self) {
        // Held mbufs go back to the pool (the relay is stopping: nothing is sent any more).
        self.seq.clear();
        if let Some(h) = self.seq.hold_stats() {
            self.counters.set_hold(&h);
        }
        self.flush_all();
        self.flush_control();
        self.flush_repair();
        for p in &mut self.io.ports {
            p.txbuf.clear();
            p.tx_bytes = 0;
        }
        self.ctl_buf.clear();
        self.io.repair_buf.clear();
        self.published.publish(&self.counters);
    }

    /// The counters so far (exact, unlike the published copy).
    pub fn counters(&self) -> &LocalCounters {
        &self.counters
    }

    /// Processes one received burst from port `port`, to completion: every mbuf is forwarded,
    /// answered, passed to the control path or freed (and counted) before this returns, except
    /// what waits in the TX buffers for the next flush.
    ///
    /// Two passes, as DPDK's examples prefetch: classify the whole burst (headers only), then
    /// prefetch the dedup bucket of every fragment in one tight loop so the cache misses into the
    /// large shared table overlap instead of being paid one after another, then act.
    pub fn process_burst(&mut self, port: usize, batch: &mut MbufBatch) {
        let local = self.table.get().local().local(port);
        let mut actions = [Action::Drop(DropReason::Multisegment); MAX_BURST];
        for (a, m) in actions.iter_mut().zip(batch.iter()) {
            if m.segments() == 1 {
                *a = classify(m.data(), &local);
            }
        }
        for a in &actions[..batch.len()] {
            if let Action::Fragment(info) = a {
                self.dedup.prefetch(&info.dedup_key());
            }
        }
        // By reference: the array is 32 classifications of ~80 bytes, not to be copied again.
        for (m, action) in batch.drain().zip(actions.iter()) {
            self.counters.inc(Counter::RxPackets);
            self.counters.add(Counter::RxBytes, m.pkt_len() as u64);
            self.handle(port, m, action);
        }
        self.flush_control();
        self.flush_repair();
    }

    #[inline]
    fn handle(&mut self, port: usize, mut m: Mbuf, action: &Action) {
        let local = self.table.get().local().local(port);
        match *action {
            Action::Fragment(ref info) => self.fragment(m, info),
            Action::Control => self.push_control(m),
            Action::ArpRequest => {
                // A request from X tells X's MAC, and a next hop the control path resolves may
                // ask before it answers: a copy goes to the control path (ARP is rare; the
                // copy takes a header-pool mbuf), then the request is answered in place.
                self.copy_to_control(m.data());
                if m.data_mut().is_some_and(|d| arp_reply_in_place(d, &local)) {
                    self.counters.inc(Counter::ArpReplies);
                    self.push_tx(port, m);
                } else {
                    self.counters.drop(DropReason::ArpOther);
                }
            }
            Action::IcmpEcho => {
                if m.data_mut()
                    .is_some_and(|d| icmp_echo_reply_in_place(d, &local))
                {
                    self.counters.inc(Counter::IcmpReplies);
                    self.push_tx(port, m);
                } else {
                    self.counters.drop(DropReason::IcmpOther);
                }
            }
            Action::Drop(reason) => self.counters.drop(reason),
        }
    }

    /// Queues `m` for the control path (flushed at the end of the burst).
    fn push_control(&mut self, m: Mbuf) {
        if let Err(m) = self.ctl_buf.push(m) {
            self.flush_control();
            if self.ctl_buf.push(m).is_err() {
                self.counters.drop(DropReason::ControlFull);
            }
        }
    }

    /// Queues a copy of a small frame (an ARP request) for the control path, in a header-pool
    /// mbuf. No mbuf or a frame too long for one: counted (`no_mbuf`), the original is still
    /// handled.
    fn copy_to_control(&mut self, frame: &[u8]) {
        let copy = self
            .io
            .header_pool
            .alloc()
            .ok()
            .and_then(|mut c| c.extend_from_slice(frame).ok().map(|_| c));
        match copy {
            Some(c) => self.push_control(c),
            None => self.counters.drop(DropReason::NoMbuf),
        }
    }

    /// One classified fragment through the forwarding sequence ([`Forwarder::fragment`]:
    /// admission, the hold of store-and-forward, the fan-out of [`DpdkIo`]).
    #[inline]
    fn fragment(&mut self, m: Mbuf, info: &FragmentInfo) {
        let now = Clocks {
            dedup: self.dedup_clock,
            hold: self.io.now_tsc,
        };
        self.seq.fragment(
            &mut self.io,
            self.table.get(),
            &self.dedup,
            m,
            info,
            now,
            &mut self.counters,
        );
    }

    fn flush_repair(&mut self) {
        self.io.flush_repair(&mut self.counters);
    }

    fn push_tx(&mut self, port: usize, m: Mbuf) {
        let len = m.pkt_len();
        push_tx(&mut self.io.ports[port], m, len, &mut self.counters);
    }

    fn flush_all(&mut self) {
        for p in &mut self.io.ports {
            flush(p, &mut self.counters);
        }
    }

    fn flush_control(&mut self) {
        if self.ctl_buf.is_empty() {
            return;
        }
        let n = self.to_control.enqueue(&mut self.ctl_buf);
        self.counters.add(Counter::ToControl, n as u64);
        let lost = self.ctl_buf.len();
        if lost > 0 {
            self.counters
                .add(Counter::Drop(DropReason::ControlFull), lost as u64);
            self.ctl_buf.clear();
        }
    }

    /// Frames the control path queued for sending (registration acks, key releases, ARP
    /// requests, retransmissions) go out through this core's TX buffers.
    fn drain_control(&mut self) {
        let Pipeline { io, counters, .. } = self;
        for p in io.ports.iter_mut() {
            let idle = match p.io.from_control.as_ref() {
                Some(ring) => ring.is_empty(),
                None => true,
            };
            if idle {
                continue;
            }
            if p.txbuf.is_full() {
                flush(p, counters);
            }
            let Some(ring) = p.io.from_control.as_mut() else {
                continue;
            };
            let before = p.txbuf.len();
            let n = ring.dequeue(&mut p.txbuf);
            p.tx_bytes += p
                .txbuf
                .iter()
                .skip(before)
                .map(Mbuf::pkt_len)
                .sum::<usize>();
            counters.add(Counter::FromControl, n as u64);
        }
    }
}

/// The DPDK side of the forwarding sequence.
///
/// Zero-copy, as DPDK's ipv4_multicast: the received mbuf is cut down to the fragment's
/// payload and shared by refcount; each destination gets a fresh 78-byte header mbuf
/// chained in front of it. Per fragment, not per copy: the Photon header as sent and its
/// checksum part ([`crate::packet::ForwardHeader`]); the hop tags four keys at a time
/// ([`crate::forward::copy_tags`]); the header mbufs in one bulk allocation, chained with
/// one refcount update ([`Mempool::alloc_chained`], up to [`MAX_CHAINED`] per call). Why
/// not `rte_pktmbuf_clone` (ipv4_multicast's other branch): a clone allocates an indirect
/// mbuf per destination *and* still needs the header mbuf, two allocations instead of one;
/// chaining the direct payload segment itself is sound because every chain wants exactly
/// the same view of it (same data offset and length, `next` = NULL) and nobody writes it.
/// Why not copy: 1.2 KB per destination is the cost this design exists to avoid.
/// With a single destination the received buffer is rewritten in place (no allocation).
impl<R: RxSource, T: TxSink> FanOut for DpdkIo<R, T> {
    type Frame = Mbuf;

    #[inline]
    fn bytes<'a>(&'a self, frame: &'a Mbuf) -> &'a [u8] {
        frame.data()
    }

    #[inline]
    fn keep(&mut self, frame: Mbuf, _: &FragmentInfo) -> Mbuf {
        // The received mbuf itself is held, untouched.
        frame
    }

    #[inline]
    fn held_bytes(&self, _: &FragmentInfo) -> usize {
        HELD_FRAGMENT_BYTES
    }

    #[inline]
    fn payload_sum(&self, frame: &Mbuf, info: &FragmentInfo) -> u16 {
        payload_sum(frame.data(), info)
    }

    #[inline]
    fn fan_out(
        &mut self,
        mut m: Mbuf,
        info: &FragmentInfo,
        shared: &ForwardHeader,
        from: usize,
        table: &Table,
        counters: &mut LocalCounters,
    ) {
        if self.repair_buf.is_full() {
            // Released held fragments can exceed one burst's worth of repair notes.
            self.flush_repair(counters);
        }
        let DpdkIo {
            ports,
            header_pool,
            copies,
            to_repair,
            repair_buf,
            now_tsc,
        } = self;
        let n = table.destination_count(from);
        let payload_len = info.payload_len();
        let keep = usize::from(to_repair.is_some());
        if n + keep == 0 {
            return;
        }

        if n == 1 && keep == 0 {
            let Some((_, dest)) = table.destinations(from).next() else {
                return;
            };
            // Cut the frame to exactly header + payload (IPv4 options and trailing bytes go),
            // then overwrite the first 78 bytes.
            let cut = info.payload_offset() - FORWARD_HEADER_LEN;
            let extra = m.data_len() - info.payload_offset() - payload_len;
            let ok = m.adj(cut).is_ok()
                && m.trim(extra).is_ok()
                && m.data_mut()
                    .and_then(|d| write_copy(d, shared, dest))
                    .is_some();
            if ok {
                counters.inc(Counter::FanoutCopies);
                let len = FORWARD_HEADER_LEN + payload_len;
                push_tx(&mut ports[usize::from(dest.spec.port)], m, len, counters);
            } else {
                counters.drop(DropReason::PhotonMalformed);
            }
            return;
        }

        // The Photon header as received, for the repair note (before the mbuf is cut).
        let mut photon_in = [0u8; HEADER_LEN];
        match m.data().get(info.photon_offset..info.payload_offset()) {
            Some(h) => photon_in.copy_from_slice(h),
            None => {
                counters.drop(DropReason::PhotonMalformed);
                return;
            }
        }
        let extra = m.data_len() - info.payload_offset() - payload_len;
        if m.adj(info.payload_offset()).is_err() || m.trim(extra).is_err() {
            counters.drop(DropReason::PhotonMalformed);
            return;
        }
        let payload = match m.into_shared() {
            Ok(p) => p,
            Err(_) => {
                counters.drop(DropReason::Multisegment);
                return;
            }
        };
        if keep == 1 {
            repair_note(
                header_pool,
                *now_tsc,
                &photon_in,
                payload.clone(),
                repair_buf,
                counters,
            );
        }
        // Up to MAX_CHAINED copies per call: one bulk allocation of their header mbufs, one
        // refcount update of the payload, the headers written in place.
        let mut dests = table.destinations(from);
        let mut left = n;
        while left > 0 {
            let chunk = left.min(MAX_CHAINED);
            left -= chunk;
            let mut batch: [Option<&Peer>; MAX_CHAINED] = [None; MAX_CHAINED];
            for (slot, (_, dest)) in batch[..chunk].iter_mut().zip(&mut dests) {
                *slot = Some(dest);
            }
            let mut tags = [0u64; MAX_CHAINED];
            copy_tags(shared, &batch[..chunk], &mut tags[..chunk]);
            let write = |i: usize, buf: &mut [u8]| {
                let dest = batch[i]?;
                write_copy_tagged(buf, shared, dest, tags[i]).map(|_| usize::from(dest.spec.port))
            };
            if header_pool
                .alloc_chained(FORWARD_HEADER_LEN, &payload, chunk, write, copies)
                .is_err()
            {
                // The pool cannot give the whole chunk (overload): one at a time, as far as it
                // goes, so that what is left still goes out.
                for i in 0..chunk {
                    let one = |_: usize, buf: &mut [u8]| write(i, buf);
                    if header_pool
                        .alloc_chained(FORWARD_HEADER_LEN, &payload, 1, one, copies)
                        .is_err()
                    {
                        break;
                    }
                }
            }
            counters.add(
                Counter::Drop(DropReason::NoMbuf),
                (chunk - copies.len()) as u64,
            );
            let len = FORWARD_HEADER_LEN + payload_len;
            for (chain, port) in copies.drain(..) {
                counters.inc(Counter::FanoutCopies);
                push_tx(&mut ports[port], chain, len, counters);
            }
        }
        // `payload` drops here: the reference this fragment arrived with.
    }
}

impl<R, T> DpdkIo<R, T> {
    /// The burst's repair notes to the control core, in one enqueue; what does not fit is
    /// freed (counted).
    fn flush_repair(&mut self, counters: &mut LocalCounters) {
        if self.repair_buf.is_empty() {
            return;
        }
        let Some(ring) = self.to_repair.as_mut() else {
            self.repair_buf.clear();
            return;
        };
        let n = ring.enqueue(&mut self.repair_buf);
        counters.add(Counter::ToRepairCache, n as u64);
        let lost = self.repair_buf.len();
        if lost > 0 {
            counters.add(Counter::Drop(DropReason::RepairRingFull), lost as u64);
            self.repair_buf.clear();
        }
    }
}

/// Bytes of the TSC stamp in front of a repair note's Photon header.
pub const NOTE_STAMP_LEN: usize = 8;

/// One repair note: the poll's TSC and the Photon header as received in a header-pool mbuf,
/// the shared payload chained behind it. Queued in `buf` for the burst's enqueue (flushed
/// first if full).
#[inline]
fn repair_note(
    header_pool: &Mempool,
    now_tsc: u64,
    photon_in: &[u8; HEADER_LEN],
    share: SharedMbuf,
    buf: &mut MbufBatch,
    counters: &mut LocalCounters,
) {
    let Ok(mut h) = header_pool.alloc() else {
        counters.drop(DropReason::RepairRingFull);
        return;
    };
    let mut stamped = [0u8; NOTE_STAMP_LEN + HEADER_LEN];
    stamped[..NOTE_STAMP_LEN].copy_from_slice(&now_tsc.to_ne_bytes());
    stamped[NOTE_STAMP_LEN..].copy_from_slice(photon_in);
    if h.extend_from_slice(&stamped).is_err() {
        counters.drop(DropReason::RepairRingFull);
        return;
    }
    let Ok(note) = h.chain_shared(share) else {
        counters.drop(DropReason::RepairRingFull);
        return;
    };
    if buf.push(note).is_err() {
        // More notes than a burst holds cannot happen (one per received frame); count it.
        counters.drop(DropReason::RepairRingFull);
    }
}

/// Queues `m` (whose `pkt_len` is `len`: the caller knows it) for TX on `p`.
#[inline]
fn push_tx<R, T: TxSink>(
    p: &mut PortState<R, T>,
    m: Mbuf,
    len: usize,
    counters: &mut LocalCounters,
) {
    debug_assert_eq!(len, m.pkt_len());
    if let Err(m) = p.txbuf.push(m) {
        flush(p, counters);
        if p.txbuf.push(m).is_err() {
            counters.drop(DropReason::TxFull);
            return;
        }
    }
    p.tx_bytes += len;
    if p.txbuf.is_full() {
        flush(p, counters);
    }
}

#[inline]
fn flush<R, T: TxSink>(p: &mut PortState<R, T>, counters: &mut LocalCounters) {
    if p.txbuf.is_empty() {
        return;
    }
    let bytes = std::mem::take(&mut p.tx_bytes);
    let sent = p.io.tx.tx_burst(&mut p.txbuf);
    // What the queue did not take (rare: a full TX queue) is read back; it is dropped below.
    let left_bytes: usize = p.txbuf.iter().map(Mbuf::pkt_len).sum();
    counters.add(Counter::TxPackets, sent as u64);
    counters.add(Counter::TxBytes, bytes.saturating_sub(left_bytes) as u64);
    if !p.txbuf.is_empty() {
        // The queue is full: drop rather than stall the core (the NIC is the bottleneck; FEC
        // repairs what is lost).
        counters.add(Counter::Drop(DropReason::TxFull), p.txbuf.len() as u64);
        p.txbuf.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{IdleBackoff, IDLE_POLLS};

    #[test]
    fn idle_backoff_sleeps_only_after_a_run_of_empty_polls_and_resets_on_traffic() {
        let d = Duration::from_micros(50);
        let mut b = IdleBackoff::new(d);
        for _ in 1..IDLE_POLLS {
            assert_eq!(b.after_poll(0), None);
        }
        assert_eq!(b.after_poll(0), Some(d), "the 64th empty poll");
        assert_eq!(b.after_poll(0), Some(d), "and every one after it");
        assert_eq!(b.after_poll(3), None, "traffic");
        assert_eq!(b.after_poll(0), None, "a new run starts");
        let mut never = IdleBackoff::default();
        for _ in 0..1000 {
            assert!(never.after_poll(0).is_none_or(|d| d.is_zero()));
        }
    }
}
