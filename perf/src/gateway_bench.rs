//! `photon-perf gateway-rx`: how many block fragments one gateway core receives per second on
//! loopback, four receivers measured one after the other in the same run:
//!
//! 1. `recv_from`, plain sender: one datagram per system call (the baseline).
//! 2. `recvmmsg`, plain sender: the gateway's batched receiver without GRO
//!    (`photon_udp::BatchRecv::new`, up to `--batch` datagrams per call).
//! 3. `recvmmsg`+GRO, GSO sender: the gateway's receiver with `UDP_GRO`
//!    (`BatchRecv::with_gro`, as the gateway runs) against a sender that sends runs of
//!    `--size`-byte segments in one `sendmsg` with `UDP_SEGMENT` (up to 64 per call, within
//!    the 64 KiB datagram limit: 53 at 1232 bytes) — what a relay batching its copies of a
//!    block's fragments to one gateway would send. On loopback the GSO buffer reaches the
//!    socket whole, so this is the kernel cost per buffer, not per datagram; from a NIC the
//!    same coalescing comes from the NIC's GRO.
//! 4. `recvmmsg`+GRO, plain sender: the GRO receiver when nothing is coalesced (what it costs
//!    against senders that do not use GSO).
//!
//! The sender thread blasts real block-fragment datagrams (a source shard's header and payload,
//! `--size` bytes) as fast as it can (plain: `sendmmsg` of 64 datagrams); the receiver checks
//! each datagram's header (`wire::Packet::new_checked`) and counts. Loopback drops what the
//! receiver does not take in time, so "received/s" is the receiver's rate, "offered/s" the
//! datagrams the sender got into the kernel per second. Both sockets' buffers are set to
//! `--recv-buffer-kb` as the gateway does.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use photon_protocol::wire::{self, FragmentKind, FragmentRepr, Packet};
use photon_udp::{send_segments, Arena, BatchRecv, BatchSend};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Datagram size in bytes (36-byte header + shard), at most 1232.
    #[arg(long, default_value_t = 1232)]
    pub size: usize,
    /// Datagrams per recvmmsg (1..=64).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Pin the receiver to this core and the sender to the next one (if they exist).
    #[arg(long)]
    pub core: Option<usize>,
    /// Receive buffer of the receiving socket, KiB (the gateway's default; 0: the system's).
    #[arg(long, default_value_t = 8192)]
    pub recv_buffer_kb: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Receiver {
    RecvFrom,
    Mmsg,
    MmsgGro,
}

struct Outcome {
    received: u64,
    bad: u64,
    sent: u64,
    secs: f64,
    /// (buffers, datagrams) the batched receiver took.
    messages: Option<(u64, u64)>,
    /// GRO asked for but refused by the kernel.
    gro_refused: bool,
}

/// The most segments one `UDP_SEGMENT` send carries: 64, and within a UDP datagram's 65,507
/// bytes.
fn gso_segments(size: usize) -> usize {
    (65_507 / size).clamp(1, 64)
}

fn fragment(size: usize) -> Result<Vec<u8>, String> {
    let payload = vec![0xab; size.saturating_sub(wire::HEADER_LEN).max(1)];
    let f = FragmentRepr {
        kind: FragmentKind::Source,
        stream: 0x5eed,
        index: 7,
        count: 900,
        k: 900,
        r: 45,
        payload: &payload,
    };
    let mut buf = vec![0u8; f.buffer_len()];
    f.emit(1, 0, 0, &mut buf)
        .map_err(|e| format!("fragment: {e}"))?;
    Ok(buf)
}

fn pin(core: Option<usize>) {
    if let Some(c) = core {
        if let Some(id) =
            core_affinity::get_core_ids().and_then(|ids| ids.into_iter().find(|i| i.id == c))
        {
            core_affinity::set_for_current(id);
        }
    }
}

fn measure(args: &Args, receiver: Receiver, gso: bool) -> Result<Outcome, String> {
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    if args.recv_buffer_kb > 0 {
        photon_udp::set_recv_buffer(&rx, args.recv_buffer_kb * 1024)
            .map_err(|e| format!("receive buffer: {e}"))?;
    }
    let dst = rx.local_addr().map_err(|e| e.to_string())?;
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let datagram = fragment(args.size)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent, datagram) = (stop.clone(), sent.clone(), datagram.clone());
        let core = args.core.map(|c| c + 1);
        std::thread::spawn(move || {
            pin(core);
            let mut n = 0u64;
            if gso {
                let segs = gso_segments(datagram.len());
                let run = datagram.repeat(segs);
                let seg = datagram.len() as u16;
                while !stop.load(Ordering::Relaxed) {
                    if send_segments(&tx, dst, seg, &run).is_ok() {
                        n += segs as u64;
                    }
                }
            } else {
                let mut out = BatchSend::new();
                while !stop.load(Ordering::Relaxed) {
                    while let Some(slot) = out.slot() {
                        slot[..datagram.len()].copy_from_slice(&datagram);
                        out.commit(datagram.len(), dst);
                    }
                    n += out.flush(&tx).unwrap_or(0) as u64;
                }
            }
            sent.store(n, Ordering::Relaxed);
        })
    };
    pin(args.core);
    let (mut received, mut bad) = (0u64, 0u64);
    let mut count = |d: &[u8]| {
        if Packet::new_checked(d).is_ok() {
            received += 1;
        } else {
            bad += 1;
        }
    };
    // Warm up briefly, then measure.
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(args.seconds);
    let (mut messages, mut gro_refused) = (None, false);
    match receiver {
        Receiver::Mmsg | Receiver::MmsgGro => {
            let mut r = if receiver == Receiver::MmsgGro {
                BatchRecv::with_gro(&rx, Arena::new(), args.batch)
            } else {
                BatchRecv::new(Arena::new(), args.batch)
            };
            while Instant::now() < end {
                r.recv(&rx, |_, d| count(d)).map_err(|e| e.to_string())?;
            }
            messages = Some((r.messages, r.datagrams));
            gro_refused = receiver == Receiver::MmsgGro && !r.gro();
        }
        Receiver::RecvFrom => {
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                if let Ok((n, _)) = rx.recv_from(&mut buf) {
                    count(&buf[..n]);
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    Ok(Outcome {
        received,
        bad,
        sent: sent.load(Ordering::Relaxed),
        secs,
        messages,
        gro_refused,
    })
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.size < wire::HEADER_LEN + 1 || args.size > wire::MAX_DATAGRAM {
        return Err(format!(
            "--size must be within {}..={}",
            wire::HEADER_LEN + 1,
            wire::MAX_DATAGRAM
        ));
    }
    println!(
        "gateway-rx: {}-byte fragments on loopback, {:.1} s each, receiver core {:?}, batch {}, \
         receive buffer {} KiB, GSO sender {} segments per sendmsg",
        args.size,
        args.seconds,
        args.core,
        args.batch,
        args.recv_buffer_kb,
        gso_segments(args.size)
    );
    let plain = measure(args, Receiver::RecvFrom, false)?;
    let batched = measure(args, Receiver::Mmsg, false)?;
    let gro = measure(args, Receiver::MmsgGro, true)?;
    let gro_plain = measure(args, Receiver::MmsgGro, false)?;
    let warmup = Duration::from_millis(100).as_secs_f64();
    let rate = |o: &Outcome| o.received as f64 / o.secs;
    for (name, o) in [
        ("plain recv_from, 1 per call", &plain),
        ("recvmmsg batched (no GRO)", &batched),
        ("recvmmsg+GRO, GSO sender", &gro),
        ("recvmmsg+GRO, plain sender", &gro_plain),
    ] {
        let per_buffer = match o.messages {
            Some((m, d)) if m > 0 => format!(", {:.1} datagrams/buffer", d as f64 / m as f64),
            _ => String::new(),
        };
        let off = if o.gro_refused {
            " (GRO refused by the kernel)"
        } else {
            ""
        };
        println!(
            "{name:<30} received {:>10.0} fragments/s ({:>7.1} MB/s payload), offered {:>10.0}/s, bad {}{per_buffer}{off}",
            rate(o),
            o.received as f64 * args.size as f64 / o.secs / 1e6,
            o.sent as f64 / (o.secs + warmup),
            o.bad
        );
    }
    let base = rate(&plain).max(1.0);
    println!(
        "vs plain recv_from: recvmmsg {:.2}x, recvmmsg+GRO (GSO sender) {:.2}x, recvmmsg+GRO (plain sender) {:.2}x",
        rate(&batched) / base,
        rate(&gro) / base,
        rate(&gro_plain) / base
    );
    Ok(())
}
