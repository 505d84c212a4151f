//! The forwarding sequence, written once for both backends: admission ([`admit_counted`]),
//! the hold of store-and-forward ([`Holder`]), release, the header every copy shares
//! ([`copy_header`]), the fan-out, and expiry. Sans-IO: a backend supplies its buffers and I/O
//! through [`FanOut`] (the DPDK pipeline: mbufs and TX bursts; the socket backend: datagram
//! buffers and `sendmmsg`) and the clocks; [`Forwarder`] decides what happens, in what order.

use crate::forward::dedup::Dedup;
use crate::forward::hold::{Forwarding, HoldLimits, HoldStats, Holder};
use crate::forward::table::Table;
use crate::forward::{admit_counted, copy_header};
use crate::ops::counters::{DropReason, LocalCounters};
use crate::packet::{ForwardHeader, FragmentInfo};

/// What a backend does for the sequence: hold its frames' bytes, keep a frame past its
/// receive batch, and send the copies.
pub trait FanOut {
    /// A received fragment as the backend holds it (its offsets as in [`FragmentInfo`]).
    type Frame;

    /// The bytes of `frame` from which `FragmentInfo`'s offsets count.
    fn bytes<'a>(&'a self, frame: &'a Self::Frame) -> &'a [u8];

    /// Makes `frame` outlive the receive batch it arrived in, for the holder (an mbuf is kept
    /// as it is; a receive buffer is copied out).
    fn keep(&mut self, frame: Self::Frame, info: &FragmentInfo) -> Self::Frame;

    /// What one held frame counts against `relay.hold_max_bytes` on this backend.
    fn held_bytes(&self, info: &FragmentInfo) -> usize;

    /// The ones'-complement sum of the payload the copies carry
    /// ([`crate::packet::payload_sum`]), for the copies' UDP checksum; a backend whose kernel
    /// computes checksums returns 0.
    fn payload_sum(&self, frame: &Self::Frame, info: &FragmentInfo) -> u16;

    /// Sends one copy of `frame` to each destination of the sender's slot `from` in `table`,
    /// its header written from `shared` ([`crate::forward::write_copy`] and friends), and counts
    /// what it sent and dropped.
    fn fan_out(
        &mut self,
        frame: Self::Frame,
        info: &FragmentInfo,
        shared: &ForwardHeader,
        from: usize,
        table: &Table,
        counters: &mut LocalCounters,
    );

    /// Takes back a frame the sequence will not send (its sender left the table while it was
    /// held). Dropping it is the default.
    fn discard(&mut self, frame: Self::Frame) {
        drop(frame);
    }
}

/// A fragment the holder keeps: the backend's frame and what classification said about it.
pub struct Held<F> {
    frame: F,
    info: FragmentInfo,
}

/// The clocks one fragment is handled at: the dedup table's coarse clock
/// ([`Dedup::clock`]) and the holder's clock (any unit; the hold timeout is in it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clocks {
    pub dedup: u16,
    pub hold: u64,
}

/// The forwarding sequence of one backend thread: cut-through, or store-and-forward with its
/// holder.
pub struct Forwarder<F> {
    hold: Option<Box<Holder<Held<F>>>>,
}

impl<F> std::fmt::Debug for Forwarder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("hold", &self.hold_stats())
            .finish()
    }
}

impl<F> Default for Forwarder<F> {
    fn default() -> Self {
        Forwarder::cut_through()
    }
}

impl<F> Forwarder<F> {
    /// Every admitted fragment is fanned out as it arrives.
    pub fn cut_through() -> Forwarder<F> {
        Forwarder { hold: None }
    }

    /// Store-and-forward ([`crate::forward::hold`]): admitted fragments are held until their
    /// stream could be rebuilt, then fanned out exactly as cut-through would have.
    pub fn store_and_forward(limits: HoldLimits) -> Forwarder<F> {
        Forwarder {
            hold: Some(Box::new(Holder::new(limits))),
        }
    }

    /// The mode `[relay] forwarding` names.
    pub fn new(mode: Forwarding, limits: HoldLimits) -> Forwarder<F> {
        match mode {
            Forwarding::CutThrough => Forwarder::cut_through(),
            Forwarding::StoreAndForward => Forwarder::store_and_forward(limits),
        }
    }

    /// The holder's counters (store-and-forward only).
    pub fn hold_stats(&self) -> Option<HoldStats> {
        self.hold.as_ref().map(|h| h.stats())
    }

    /// Drops everything held (shutdown); returns how many frames that was.
    pub fn clear(&mut self) -> usize {
        self.hold.as_mut().map_or(0, |h| h.clear())
    }

    /// One classified fragment `frame`, in order: admitted (or dropped and counted), held if
    /// store-and-forward holds its stream, else fanned out; what its arrival released is
    /// fanned out after it, in release order.
    #[inline]
    // The sequence's inputs are distinct things the backend owns; a struct built per fragment
    // would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn fragment<B: FanOut<Frame = F>>(
        &mut self,
        io: &mut B,
        table: &Table,
        dedup: &Dedup,
        frame: F,
        info: &FragmentInfo,
        now: Clocks,
        counters: &mut LocalCounters,
    ) {
        let Some(from) = admit_counted(table, dedup, io.bytes(&frame), info, now.dedup, counters)
        else {
            return;
        };
        let Some(hold) = self.hold.as_mut() else {
            send(io, table, frame, info, from, counters);
            return;
        };
        let meta = info.hold_meta(io.held_bytes(info));
        let frame = io.keep(frame, info);
        match hold.offer(&meta, Held { frame, info: *info }, now.hold) {
            // Its stream was released before: straight through.
            Some(h) => send(io, table, h.frame, &h.info, from, counters),
            None => self.release(io, table, counters),
        }
    }

    /// Releases the streams held longer than the hold timeout at `now` (the holder's clock)
    /// and fans them out; no-op in cut-through. Returns the streams released.
    pub fn expire<B: FanOut<Frame = F>>(
        &mut self,
        io: &mut B,
        table: &Table,
        now: u64,
        counters: &mut LocalCounters,
    ) -> usize {
        let Some(h) = self.hold.as_mut() else {
            return 0;
        };
        let n = h.expire(now);
        if n > 0 {
            self.release(io, table, counters);
        }
        n
    }

    /// Fans out what the holder released, in order, with the current table.
    fn release<B: FanOut<Frame = F>>(
        &mut self,
        io: &mut B,
        table: &Table,
        counters: &mut LocalCounters,
    ) {
        while let Some(h) = self.hold.as_mut().and_then(|h| h.pop_ready()) {
            let Some(from) = table.slot_of(h.info.sender) else {
                // The sender left the table while its fragment was held.
                counters.drop(DropReason::UnknownSender);
                io.discard(h.frame);
                continue;
            };
            send(io, table, h.frame, &h.info, from, counters);
        }
    }
}

/// The header the copies share, then the backend's fan-out.
#[inline]
fn send<B: FanOut>(
    io: &mut B,
    table: &Table,
    frame: B::Frame,
    info: &FragmentInfo,
    from: usize,
    counters: &mut LocalCounters,
) {
    let sum = io.payload_sum(&frame, info);
    let shared = io
        .bytes(&frame)
        .get(info.photon_offset..)
        .and_then(|photon_in| copy_header(table, photon_in, info, sum));
    match shared {
        Some(shared) => io.fan_out(frame, info, &shared, from, table, counters),
        None => {
            counters.drop(DropReason::PhotonMalformed);
            io.discard(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::hold::HoldLimits;
    use crate::forward::tests::{fragment_frame, local, table};
    use crate::forward::write_copy;
    use crate::ops::counters::Counter;
    use crate::packet::{classify, payload_sum, Action, FORWARD_HEADER_LEN};
    use photon_protocol::wire::FragmentKind;

    /// A backend on byte vectors: frames are owned, copies are collected.
    #[derive(Default)]
    struct Collect {
        sent: Vec<(u32, u64, Vec<u8>)>,
        discarded: usize,
        kept: usize,
    }

    impl FanOut for Collect {
        type Frame = Vec<u8>;
        fn bytes<'a>(&'a self, frame: &'a Vec<u8>) -> &'a [u8] {
            frame
        }
        fn keep(&mut self, frame: Vec<u8>, _: &FragmentInfo) -> Vec<u8> {
            self.kept += 1;
            frame
        }
        fn held_bytes(&self, info: &FragmentInfo) -> usize {
            info.datagram_len
        }
        fn payload_sum(&self, frame: &Vec<u8>, info: &FragmentInfo) -> u16 {
            payload_sum(frame, info)
        }
        fn fan_out(
            &mut self,
            frame: Vec<u8>,
            info: &FragmentInfo,
            shared: &ForwardHeader,
            from: usize,
            table: &Table,
            counters: &mut LocalCounters,
        ) {
            let payload = &frame[info.payload_offset()..info.payload_offset() + info.payload_len()];
            for (_, dest) in table.destinations(from) {
                let mut out = vec![0u8; FORWARD_HEADER_LEN];
                write_copy(&mut out, shared, dest).unwrap();
                out.extend_from_slice(payload);
                counters.inc(Counter::FanoutCopies);
                self.sent
                    .push((dest.spec.node_id, frame_stream(&frame, info), out));
            }
        }
        fn discard(&mut self, _: Vec<u8>) {
            self.discarded += 1;
        }
    }

    fn frame_stream(frame: &[u8], info: &FragmentInfo) -> u64 {
        photon_protocol::wire::Packet::new_unchecked(&frame[info.photon_offset..]).stream()
    }

    fn info_of(frame: &[u8]) -> FragmentInfo {
        match classify(frame, &local()) {
            Action::Fragment(info) => info,
            other => panic!("not a fragment: {other:?}"),
        }
    }

    /// A forwarder with its test I/O and counters.
    struct Rig {
        f: Forwarder<Vec<u8>>,
        io: Collect,
        c: LocalCounters,
    }

    impl Rig {
        fn new(f: Forwarder<Vec<u8>>) -> Rig {
            Rig {
                f,
                io: Collect::default(),
                c: LocalCounters::default(),
            }
        }

        /// Hands `frame` to the forwarder at hold-clock `hold_now` (dedup clock 0).
        fn offer(&mut self, t: &Table, d: &Dedup, frame: Vec<u8>, hold_now: u64) {
            let info = info_of(&frame);
            let now = Clocks {
                dedup: 0,
                hold: hold_now,
            };
            self.f
                .fragment(&mut self.io, t, d, frame, &info, now, &mut self.c);
        }

        fn expire(&mut self, t: &Table, now: u64) -> usize {
            self.f.expire(&mut self.io, t, now, &mut self.c)
        }
    }

    #[test]
    fn cut_through_fans_out_on_arrival_and_counts_admission() {
        let t = table(&[2, 3, 4]);
        let d = Dedup::new(1024, [3, 3]);
        let mut r = Rig::new(Forwarder::cut_through());
        r.offer(&t, &d, fragment_frame(2, 1, 0, &[7; 100], 0, true), 0);
        r.offer(&t, &d, fragment_frame(2, 1, 0, &[7; 100], 0, true), 0);
        assert_eq!(
            r.io.sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(r.c.get(Counter::Fragments), 1);
        assert_eq!(r.c.get(Counter::DedupHits), 1);
        assert_eq!(r.io.kept, 0, "cut-through keeps nothing");
        // The copies are the ones the decision's own helpers write.
        let frame = fragment_frame(2, 1, 0, &[7; 100], 0, true);
        let info = info_of(&frame);
        let shared = copy_header(
            &t,
            &frame[info.photon_offset..],
            &info,
            payload_sum(&frame, &info),
        )
        .unwrap();
        let mut expect = vec![0u8; FORWARD_HEADER_LEN];
        write_copy(&mut expect, &shared, t.peer(t.slot_of(3).unwrap()).unwrap()).unwrap();
        assert_eq!(r.io.sent[0].2[..FORWARD_HEADER_LEN], expect[..]);
    }

    /// A fragment of `kind` of `stream` from peer 2 (`count` fragments of its kind, `k` source
    /// shards, 10 repair shards).
    fn frame_of(kind: FragmentKind, stream: u64, index: u16, count: u16, k: u16) -> Vec<u8> {
        use crate::forward::tests::{keys_of, udp_frame};
        use photon_protocol::wire::FragmentRepr;
        let payload = [5u8; 40];
        let f = FragmentRepr {
            kind,
            stream,
            index,
            count,
            k,
            r: 10,
            payload: &payload,
        };
        let dgram = crate::testkit::signed_fragment(&f, 2, 0, &keys_of(2).recv);
        udp_frame(2, &dgram, true)
    }

    #[test]
    fn store_and_forward_holds_until_complete_then_releases_in_order_and_expires_the_rest() {
        let t = table(&[2, 3]);
        let d = Dedup::new(1024, [4, 4]);
        let limits = HoldLimits {
            max_streams: 4,
            max_bytes: 1 << 20,
            timeout: 100,
        };
        let mut r = Rig::new(Forwarder::store_and_forward(limits));
        // Stream 9 needs k = 100 shards (fragment_frame's header) and its one manifest
        // fragment: hold 99 shards, then the manifest, then the 100th shard releases it.
        for i in 0..99 {
            r.offer(&t, &d, fragment_frame(2, 9, i, &[1; 20], 0, true), 0);
        }
        r.offer(&t, &d, frame_of(FragmentKind::Manifest, 9, 0, 1, 100), 0);
        assert!(r.io.sent.is_empty(), "held");
        assert_eq!(r.io.kept, 100);
        r.offer(&t, &d, fragment_frame(2, 9, 99, &[1; 20], 0, true), 0);
        assert_eq!(r.io.sent.len(), 101, "released whole, to peer 3");
        // Later fragments of a released stream go straight through.
        r.offer(&t, &d, frame_of(FragmentKind::Repair, 9, 0, 10, 100), 0);
        assert_eq!(r.io.sent.len(), 102);
        // An incomplete stream waits for the timeout.
        r.offer(&t, &d, fragment_frame(2, 10, 0, &[1; 20], 0, true), 5);
        assert_eq!(r.expire(&t, 50), 0);
        assert_eq!(r.io.sent.len(), 102);
        assert_eq!(r.expire(&t, 105), 1);
        assert_eq!(r.io.sent.last().unwrap().1, 10);
        assert_eq!(r.f.hold_stats().unwrap().streams_timeout, 1);
        // A held fragment whose sender left the table is discarded and counted.
        r.offer(&t, &d, fragment_frame(2, 11, 0, &[1; 20], 0, true), 200);
        let gone = table(&[3]);
        assert_eq!(r.expire(&gone, 400), 1);
        assert_eq!(r.io.discarded, 1);
        assert_eq!(r.c.get(Counter::Drop(DropReason::UnknownSender)), 1);
    }
}
