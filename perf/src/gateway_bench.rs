//! `photon-perf gateway-rx`: how many block fragments one gateway core receives per second on
//! loopback with the gateway's batched receiver (`recvmmsg` into the arena,
//! `photon_gateway::udp::BatchRecv`), printed beside a plain one-datagram-per-`recv_from` loop
//! measured in the same run against the same sender.
//!
//! A sender thread blasts real block-fragment datagrams (a source shard's header and payload,
//! `--size` bytes) with `sendmmsg` as fast as it can; the receiver thread checks each datagram's
//! header (`wire::Packet::new_checked`) and counts. Loopback drops what the receiver does not
//! take in time, so "received/s" is the receiver's rate, "sent/s" the offered load.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use photon_gateway::udp::{Arena, BatchRecv, BatchSend};
use photon_protocol::wire::{self, FragmentKind, FragmentRepr, Packet};

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
}

struct Outcome {
    received: u64,
    bad: u64,
    sent: u64,
    secs: f64,
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

fn measure(args: &Args, batched: bool) -> Result<Outcome, String> {
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
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
            let mut out = BatchSend::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                while let Some(slot) = out.slot() {
                    slot[..datagram.len()].copy_from_slice(&datagram);
                    out.commit(datagram.len(), dst);
                }
                n += out.flush(&tx).unwrap_or(0) as u64;
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
    if batched {
        let mut r = BatchRecv::new(Arena::new(), args.batch);
        while Instant::now() < end {
            r.recv(&rx, |_, d| count(d)).map_err(|e| e.to_string())?;
        }
    } else {
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, _)) = rx.recv_from(&mut buf) {
                count(&buf[..n]);
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
        "gateway-rx: {}-byte fragments on loopback, {:.1} s each, receiver core {:?}, batch {}",
        args.size, args.seconds, args.core, args.batch
    );
    let plain = measure(args, false)?;
    let batched = measure(args, true)?;
    let warmup = Duration::from_millis(100).as_secs_f64();
    for (name, o) in [
        ("plain recv_from, 1 per call", &plain),
        ("recvmmsg batched (gateway)", &batched),
    ] {
        println!(
            "{name:<30} received {:>10.0} fragments/s ({:>7.1} MB/s payload), offered {:>10.0}/s, bad {}",
            o.received as f64 / o.secs,
            o.received as f64 * args.size as f64 / o.secs / 1e6,
            o.sent as f64 / (o.secs + warmup),
            o.bad
        );
    }
    let ratio =
        (batched.received as f64 / batched.secs) / (plain.received as f64 / plain.secs).max(1.0);
    println!("batched / plain: {ratio:.2}x");
    Ok(())
}
