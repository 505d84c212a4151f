//! The control core of the DPDK backend: drives [`Control`] from the data cores' control rings
//! ([`ControlLink`]) on its own thread (the EAL main lcore), publishes new forwarding tables,
//! queues its answers as whole Ethernet frames on the per-port rings that pipeline core 0
//! drains, keeps forwarded fragments (repair notes) in the repair cache zero-copy, and resolves
//! next hops by ARP. Design: `docs/internals/relay.md`, "The control core and its rings".

use std::net::SocketAddrV4;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use photon_dpdk::MbufBatch;
use photon_protocol::wire::{Packet, HEADER_LEN};

use crate::control::{unix_ms, ArpQuery, Control, ControlShared, Outgoing};
use crate::dpdk::dataplane::ControlLink;
use crate::dpdk::pipeline::NOTE_STAMP_LEN;
use crate::ops::stages::{unix_ns, StageLog};
use crate::packet::{
    arp_sender, csum_data, emit_arp_request, parse_udp, write_forward_header, HeaderTemplate,
    FORWARD_HEADER_LEN,
};

/// Frames the control core could not queue or build.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverDrops {
    /// Neither an IPv4/UDP frame nor an Ethernet/IPv4 ARP frame.
    pub not_udp: u64,
    /// The control pool was empty, or a frame did not fit an mbuf.
    pub no_mbuf: u64,
    /// A port's ring towards the data core was full.
    pub ring_full: u64,
    /// A repair note too short for its stamp and header (freed, not cached).
    pub bad_note: u64,
}

/// How long repair notes took from their data core's poll to the control core.
#[derive(Debug, Default)]
struct Lags {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Lags {
    fn add(&mut self, ns: u64) {
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }
}

/// TSC ticks to nanoseconds at `hz` ticks per second (0 Hz: 0).
fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000_000 / u128::from(hz)).min(u128::from(u64::MAX)) as u64
}

/// Writes one outgoing datagram as a whole frame into an mbuf from the link's pool and queues
/// it on its port's ring.
fn queue(link: &mut ControlLink, o: &Outgoing, drops: &mut DriverDrops) {
    let local = &link.local;
    let Some(&src_mac) = local.port_macs.get(usize::from(o.port)) else {
        drops.no_mbuf += 1;
        return;
    };
    let Some(ring) = link.to_ports.get_mut(usize::from(o.port)) else {
        drops.no_mbuf += 1;
        return;
    };
    if o.datagram.len() < HEADER_LEN {
        drops.no_mbuf += 1;
        return;
    }
    let src = SocketAddrV4::new(local.ip, local.udp_port);
    let template = HeaderTemplate::between(src_mac, src, o.mac, o.to);
    let Ok(mut m) = link.pool.alloc() else {
        drops.no_mbuf += 1;
        return;
    };
    let payload = &o.datagram[HEADER_LEN..];
    let Ok(buf) = m.append(FORWARD_HEADER_LEN + payload.len()) else {
        drops.no_mbuf += 1;
        return;
    };
    let tag = u64::from_be_bytes(
        o.datagram[HEADER_LEN - 8..HEADER_LEN]
            .try_into()
            .unwrap_or([0; 8]),
    );
    // The datagram is already signed for its destination: keep its header and tag as they are.
    let written = write_forward_header(
        buf,
        &template,
        &o.datagram,
        u32::from_be_bytes(o.datagram[16..20].try_into().unwrap_or([0; 4])),
        o.datagram[5],
        payload.len(),
        csum_data(payload),
        |_| tag,
    );
    if written != Some(FORWARD_HEADER_LEN) {
        drops.no_mbuf += 1;
        return;
    }
    buf[FORWARD_HEADER_LEN..].copy_from_slice(payload);
    if ring.enqueue_one(m).is_err() {
        drops.ring_full += 1;
    }
}

/// Builds an ARP request for `q` in an mbuf from the link's pool and queues it on its port's
/// ring.
fn queue_arp(link: &mut ControlLink, q: ArpQuery, drops: &mut DriverDrops) {
    let local = link.local.local(usize::from(q.port));
    let Some(ring) = link.to_ports.get_mut(usize::from(q.port)) else {
        drops.no_mbuf += 1;
        return;
    };
    let Ok(mut m) = link.pool.alloc() else {
        drops.no_mbuf += 1;
        return;
    };
    // 42 bytes, padded to Ethernet's 60-byte minimum (zeros) as a NIC would.
    let Ok(buf) = m.append(60) else {
        drops.no_mbuf += 1;
        return;
    };
    buf.fill(0);
    if emit_arp_request(buf, &local, q.ip).is_none() {
        drops.no_mbuf += 1;
        return;
    }
    if ring.enqueue_one(m).is_err() {
        drops.ring_full += 1;
    }
}

/// Runs the control core until `quit`: drains the control rings, handles each datagram,
/// publishes tables and counters. Sleeps 50 µs when there was nothing to do (the control core
/// is not a busy-polling data core).
pub fn run(
    link: &mut ControlLink,
    control: &mut Control,
    shared: &ControlShared,
    quit: &AtomicBool,
    tick: Duration,
) -> DriverDrops {
    run_with_stages(link, control, shared, quit, tick, None)
}

/// [`run`], also writing stage records ([`crate::ops::stages`]) for the forwarded fragments the data
/// cores hand over for the repair cache. A fragment's time is the TSC its data core read at the
/// start of the poll that forwarded it, converted here: one (TSC, wall clock) pair read per
/// dequeued batch of notes, minus the ticks since the stamp (so the EAL's TSC frequency only
/// scales that short lag, and the wall clock is read on this core only). The log is flushed
/// every [`crate::ops::stages::FLUSH_EVERY`] and finished when `quit` is seen, with a log line of
/// how long notes took to reach this core (the lag a control-core timestamp would have had).
pub fn run_with_stages(
    link: &mut ControlLink,
    control: &mut Control,
    shared: &ControlShared,
    quit: &AtomicBool,
    tick: Duration,
    stages: Option<&mut StageLog>,
) -> DriverDrops {
    run_with_roster(link, control, shared, quit, tick, stages, None)
}

/// [`run_with_stages`], also polling the roster file on each tick: a newer signed roster
/// replaces the one in force ([`Control::replace_roster`]).
pub fn run_with_roster(
    link: &mut ControlLink,
    control: &mut Control,
    shared: &ControlShared,
    quit: &AtomicBool,
    tick: Duration,
    mut stages: Option<&mut StageLog>,
    mut roster_watch: Option<photon_ops::roster::RosterWatcher>,
) -> DriverDrops {
    let mut drops = DriverDrops::default();
    let mut lags = Lags::default();
    let mut batch = MbufBatch::new();
    let mut out = Vec::new();
    let mut arp_out = Vec::new();
    let mut last_tick = Instant::now();
    if let Some(t) = control.take_table_update() {
        link.tables.publish((*t).clone());
    }
    while !quit.load(Ordering::Relaxed) {
        let mut work = 0;
        let now = unix_ms();
        for ring in &mut link.repair_notes {
            let n = ring.dequeue(&mut batch);
            work += n;
            if n == 0 {
                continue;
            }
            let (tsc_now, unix_now) = (photon_dpdk::rdtsc(), unix_ns());
            for mut m in batch.drain() {
                // The first segment: the data core's TSC, then the fragment's Photon header
                // (alone: the payload is the next segment, so no `new_checked`).
                let head = m.data();
                if head.len() < NOTE_STAMP_LEN + HEADER_LEN {
                    drops.bad_note += 1;
                    continue;
                }
                let mut stamp = [0u8; NOTE_STAMP_LEN];
                stamp.copy_from_slice(&head[..NOTE_STAMP_LEN]);
                let stamp = u64::from_ne_bytes(stamp);
                let stream = Packet::new_unchecked(&head[NOTE_STAMP_LEN..]).stream();
                if m.adj(NOTE_STAMP_LEN).is_err() {
                    drops.bad_note += 1;
                    continue;
                }
                if let Some(s) = stages.as_deref_mut() {
                    let lag = ticks_to_ns(tsc_now.saturating_sub(stamp), link.tsc_hz);
                    lags.add(lag);
                    s.fragment(unix_now.saturating_sub(lag), stream, m.pkt_len() as u64);
                }
                control.record_fragment_mbuf(m);
            }
        }
        for ring in 0..link.from_cores.len() {
            let n = link.from_cores[ring].dequeue(&mut batch);
            work += n;
            for m in batch.drain() {
                match parse_udp(m.data(), &link.local.port_macs) {
                    Some((src, dgram)) => control.handle(now, src, dgram, &mut out),
                    None => match arp_sender(m.data()) {
                        Some((ip, mac)) => {
                            control.learn_neighbour(ip, mac);
                        }
                        None => drops.not_udp += 1,
                    },
                }
            }
        }
        if let Some(t) = control.take_table_update() {
            link.tables.publish((*t).clone());
        }
        for o in out.drain(..) {
            queue(link, &o, &mut drops);
        }
        control.arp_due(now, &mut arp_out);
        for q in arp_out.drain(..) {
            queue_arp(link, q, &mut drops);
        }
        if last_tick.elapsed() >= tick {
            if let Some(w) = &mut roster_watch {
                crate::socket::apply_roster(w, control);
            }
            control.tick(unix_ms());
            if let Some(t) = control.take_table_update() {
                link.tables.publish((*t).clone());
            }
            control.publish(shared, unix_ms());
            last_tick = Instant::now();
        }
        if let Some(s) = stages.as_deref_mut() {
            s.poll(Instant::now());
        }
        if work == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    control.publish(shared, unix_ms());
    if let Some(s) = stages {
        s.finish();
        if lags.count > 0 {
            tracing::info!(
                notes = lags.count,
                mean_us = lags.sum_ns / lags.count / 1000,
                max_us = lags.max_ns / 1000,
                "stage records: forwarded fragments reached the control core this long after \
                 their data core's poll (the records carry the data core's time)"
            );
        }
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_ns() {
        assert_eq!(ticks_to_ns(2_500, 2_500_000_000), 1_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX, "saturates");
        assert_eq!(ticks_to_ns(5, 0), 0);
    }
}
