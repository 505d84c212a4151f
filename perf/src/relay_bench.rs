//! The relay's data path on one pinned core: fan-out throughput and added latency.
//!
//! Set-up (one process, no NIC): a generator on the main lcore builds valid, signed Photon
//! source-shard frames (full 1196-byte payloads, correct UDP checksums, a new (stream, index)
//! each so dedup inserts every one) and enqueues them into an rte_ring; the relay pipeline on
//! its own pinned lcore reads that ring as its RX queue and transmits the fan-out copies on a
//! net_null ethdev, whose TX frees them. One forwarding table per fan-out (1, 8, 16
//! subscribers) is *published to the running core*, as the control path does.
//!
//! Reported beside the reference from the same run: dpdk-testpmd --forward-mode=io between two
//! net_null devices on the same core (its output pps; see `iofwd`). The goal is relay output
//! at least 0.5 x testpmd at fan-out 8: each relay output packet costs a header mbuf allocation, a
//! 78-byte header with a SipHash hop tag and checksums, and a chained TX, where testpmd only
//! moves pointers.
//!
//! Latency: the generator paces input at half the rate the relay sustained at the latency
//! fan-out, stamps the TSC into the first payload bytes, and the same thread drains the copies
//! from an rte_ring to which the relay's TX hands the copy for the last destination of each
//! fan-out (the others still go to net_null); the figure is stamp → dequeue, so it includes the
//! two ring hand-offs around the relay core. A second figure is taken on the relay core itself:
//! stamp → the moment the relay hands that copy to TX (RX to TX, as a NIC's TX timestamp would
//! see it, without the output ring and the draining thread). Beside both, what took the two
//! cores away meanwhile (hypervisor steal, runnable wait, involuntary switches), since on a
//! shared machine that is what sets the tail.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use photon_dpdk::{
    lcore, Eal, MbufBatch, Mempool, Port, PortConfig, Ring, RingConsumer, RingProducer, TxQueue,
};
use photon_protocol::hopauth::{HopKey, HopKeys};
use photon_protocol::wire::{FragmentKind, FragmentRepr, HEADER_LEN};
use photon_relay::dpdk::pipeline::{Pipeline, PipelineParts, PortIo, TxSink};
use photon_relay::forward::dedup::Dedup;
use photon_relay::forward::publish;
use photon_relay::forward::table::{LocalSpec, PeerKind, PeerSpec, Table};
use photon_relay::ops::counters::{CoreCounters, Counter, DropReason};
use photon_relay::packet::{csum_add, csum_data, HeaderTemplate, FORWARD_HEADER_LEN};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds measured per fan-out (after half a second of warm-up).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Fan-outs to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,16")]
    fanout: Vec<usize>,
    /// Core of the relay pipeline (default: the last core; the generator uses the first).
    #[arg(long)]
    core: Option<usize>,
    /// The testpmd binary.
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: String,
    /// Skip the testpmd reference.
    #[arg(long)]
    no_testpmd: bool,
    /// Fan-out of the latency measurement (0 skips it).
    #[arg(long, default_value_t = 8)]
    latency_fanout: usize,
}

const RELAY_IP: [u8; 4] = [10, 0, 0, 1];
const UDP_PORT: u16 = 4433;
const SENDER: u32 = 2;
const PAYLOAD: usize = 1196;

/// TX to net_null; during the latency phase the copies for the *last* destination of each
/// fan-out (the one a fragment reaches latest) go to a ring the generator thread drains, the
/// others still to net_null (one thread could not drain every copy at half load).
struct Sink {
    null: TxQueue,
    ring: RingProducer,
    /// Last byte of the destination MAC whose copies are measured; 0 = none.
    measure: Arc<AtomicU8>,
    split: MbufBatch,
    /// Stamps at or after this TSC are measured (the end of the warm-up).
    since: Arc<AtomicU64>,
    /// RX → TX on the relay core: TSC when the relay hands the measured copy to TX minus the
    /// generator's stamp; preallocated, handed to `tx_out` when the sink is dropped.
    tx_samples: Vec<u64>,
    tx_out: Arc<Mutex<Vec<u64>>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Ok(mut out) = self.tx_out.lock() {
            out.append(&mut self.tx_samples);
        }
    }
}

/// The generator's TSC stamp in a copy's payload (the payload's first 8 bytes, big-endian).
fn stamp_of(m: &photon_dpdk::Mbuf) -> Option<u64> {
    let mut segs = m.segments_data();
    let first = segs.next().unwrap_or(&[]);
    let payload = if m.segments() > 1 {
        segs.next().unwrap_or(&[])
    } else {
        first.get(FORWARD_HEADER_LEN..).unwrap_or(&[])
    };
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

impl TxSink for Sink {
    #[inline]
    fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        let measure = self.measure.load(Ordering::Relaxed);
        if measure == 0 {
            return self.null.tx_burst(batch);
        }
        // Take everything: measured copies to the ring, the rest to net_null; what neither
        // accepts is freed (counted by neither: this sink is bench scaffolding).
        let n = batch.len();
        let mut rest = MbufBatch::new();
        let now = photon_dpdk::rdtsc();
        let since = self.since.load(Ordering::Relaxed);
        for m in batch.drain() {
            let to = if m.data().get(5) == Some(&measure) {
                if let Some(stamp) = stamp_of(&m) {
                    if stamp >= since && self.tx_samples.len() < self.tx_samples.capacity() {
                        self.tx_samples.push(now.saturating_sub(stamp));
                    }
                }
                &mut self.split
            } else {
                &mut rest
            };
            let _ = to.push(m);
        }
        self.ring.enqueue(&mut self.split);
        self.split.clear();
        self.null.tx_burst(&mut rest);
        n
    }
}

fn keys(id: u32) -> HopKeys {
    HopKeys {
        send: HopKey::from_bytes(&[id as u8; 16]),
        recv: HopKey::from_bytes(&[id as u8 ^ 0x55; 16]),
    }
}

fn table(mac: [u8; 6], fanout: usize) -> Table {
    let local = LocalSpec {
        node_id: 1,
        ip: RELAY_IP.into(),
        udp_port: UDP_PORT,
        port_macs: vec![mac],
        max_hops: 8,
    };
    let peer = |id: u32, subscribed: bool| PeerSpec {
        node_id: id,
        kind: PeerKind::Gateway {
            streams: GENERATOR_PREFIX,
        },
        addr: std::net::SocketAddrV4::new([10, 0, 1, id as u8].into(), 5000 + id as u16),
        next_hop_mac: [2, 0, 0, 0, 1, id as u8],
        port: 0,
        keys: Some(keys(id)),
        subscribed,
    };
    let mut peers = vec![peer(SENDER, false)];
    peers.extend((0..fanout as u32).map(|i| peer(10 + i, true)));
    Table::new(local, peers).expect("bench table")
}

/// Builds frames from the sender to the relay: a template plus per-frame stream, index, stamp,
/// hop tag and incrementally updated UDP checksum.
/// The generators' fragment (here and in [`crate::veth_bench`]): a source shard of a stream that
/// never completes (count = K = 32768, R = 0); [`set_seq`] gives each datagram its own stream
/// and index, so that none is a duplicate.
pub(crate) fn generator_fragment(payload: &[u8]) -> FragmentRepr<'_> {
    FragmentRepr {
        kind: FragmentKind::Source,
        stream: 0,
        index: 0,
        count: 32768,
        k: 32768,
        r: 0,
        payload,
    }
}

/// The stream prefix of the generators' streams (§4.1.6): relay-bench's sender is a gateway
/// with this prefix, so the relay's own-stream check runs on every fragment.
pub(crate) const GENERATOR_PREFIX: u32 = 0x5eed_0001;

/// Writes datagram `seq`'s stream ([`GENERATOR_PREFIX`] and `seq / 32768`) and index
/// (`seq % 32768`) into the Photon header `h` of a [`generator_fragment`].
#[inline]
pub(crate) fn set_seq(h: &mut [u8], seq: u64) {
    let stream = (u64::from(GENERATOR_PREFIX) << 32) | ((seq >> 15) & 0xffff_ffff);
    h[8..16].copy_from_slice(&stream.to_be_bytes());
    h[20..22].copy_from_slice(&((seq & 0x7fff) as u16).to_be_bytes());
}

struct Generator {
    frame: Vec<u8>,
    key: HopKey,
    base_sum: u16,
    seq: u64,
}

impl Generator {
    fn new(relay_mac: [u8; 6]) -> Generator {
        let payload = vec![0u8; PAYLOAD];
        let f = generator_fragment(&payload);
        let src = [10, 0, 1, SENDER as u8];
        let t = HeaderTemplate::new(
            [2, 0, 0, 0, 1, SENDER as u8],
            src.into(),
            5002,
            relay_mac,
            RELAY_IP.into(),
            UDP_PORT,
        );
        let mut frame = t.bytes().to_vec();
        frame.resize(42 + f.buffer_len(), 0);
        f.emit(SENDER, 0, 0, &mut frame[42..]).expect("emit");
        let udp_len = (8 + f.buffer_len()) as u16;
        let total = 20 + udp_len;
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        let ip_csum = !csum_data(&frame[14..34]);
        frame[24..26].copy_from_slice(&ip_csum.to_be_bytes());
        frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
        // Sum of everything the UDP checksum covers with stream, index, tag and stamp zero.
        let pseudo = [csum_data(&src), csum_data(&RELAY_IP), 17, udp_len];
        let base_sum = pseudo
            .iter()
            .fold(csum_data(&frame[34..]), |a, &w| csum_add(a, w));
        Generator {
            frame,
            key: keys(SENDER).recv,
            base_sum,
            seq: 0,
        }
    }

    /// Writes the next frame into `out` (same length as the template), stamped with `stamp`.
    #[inline]
    fn next(&mut self, out: &mut [u8], stamp: u64) {
        out.copy_from_slice(&self.frame);
        let h = 42;
        set_seq(&mut out[h..h + HEADER_LEN], self.seq);
        self.seq += 1;
        out[h + HEADER_LEN..h + HEADER_LEN + 8].copy_from_slice(&stamp.to_be_bytes());
        let _ = self.key.sign_header(&mut out[h..h + HEADER_LEN]);
        let changed = [
            &out[h + 8..h + 16],
            &out[h + 20..h + 22],
            &out[h + 28..h + 36],
            &out[h + 36..h + 44],
        ];
        let sum = changed
            .iter()
            .fold(self.base_sum, |a, b| csum_add(a, csum_data(b)));
        let c = match !sum {
            0 => 0xffff,
            c => c,
        };
        out[40..42].copy_from_slice(&c.to_be_bytes());
    }
}

/// Fills `batch` with up to `n` new frames; returns how many were added (fewer if the pool is
/// empty).
fn fill(pool: &Mempool, gen: &mut Generator, batch: &mut MbufBatch, n: usize, stamp: u64) -> usize {
    let len = gen.frame.len();
    let mut added = 0;
    while added < n && !batch.is_full() {
        let Ok(mut m) = pool.alloc() else { break };
        let Ok(buf) = m.append(len) else { break };
        gen.next(buf, stamp);
        let _ = batch.push(m);
        added += 1;
    }
    added
}

struct Rates {
    input_pps: f64,
    output_pps: f64,
    ring_full_share: f64,
    drops: u64,
}

pub fn run(args: &Args) -> Result<(), String> {
    let (main_core, relay_core, all_cores) = crate::iofwd::bench_cores(args.core)?;
    println!(
        "relay fan-out on core {relay_core} (generator on core {main_core}), {}s per fan-out, {PAYLOAD}-byte payloads",
        args.seconds
    );

    let reference = if args.no_testpmd {
        None
    } else {
        let a = crate::iofwd::Args {
            seconds: args.seconds,
            core: Some(relay_core),
            testpmd: args.testpmd.clone(),
            no_testpmd: false,
            rounds: 1,
        };
        let r = crate::iofwd::testpmd(&a, &all_cores, main_core, relay_core)?;
        println!(
            "dpdk-testpmd io-forward net_null0 <-> net_null1: {:.2} Mpps",
            r / 1e6
        );
        Some(r)
    };

    let lcores = main_core.to_string();
    let eal_args = [
        "photon-perf",
        "-l",
        &lcores,
        "--no-huge",
        "--no-shconf",
        "--no-pci",
        "-m",
        "1024",
        "--file-prefix",
        "photon_relay_bench",
        "--vdev",
        "net_null0",
        "--log-level",
        "lib.eal:error",
    ];
    let eal: &'static Eal = Box::leak(Box::new(Eal::init(&eal_args).map_err(|e| e.to_string())?));
    let e = |e: photon_dpdk::Error| e.to_string();
    let frame_pool =
        Mempool::new(eal, "bench_frames", 16383, 256, Mempool::DEFAULT_DATA_ROOM).map_err(e)?;
    let header_pool = Mempool::new(eal, "bench_headers", 65535, 256, 256).map_err(e)?;
    let id = Port::id_by_name(eal, "net_null0").map_err(e)?;
    let (port, _rx, mut tx) =
        Port::start(eal, id, &PortConfig::default(), &frame_pool).map_err(e)?;
    let mac = port.mac().map_err(e)?;
    let (mut input, relay_rx) = Ring::create(eal, "bench_in", 4096).map_err(e)?;
    let (lat_prod, mut lat_ring) = Ring::create(eal, "bench_lat", 16384).map_err(e)?;
    let (to_control, _control) = Ring::create(eal, "bench_ctl", 1024).map_err(e)?;
    let measure = Arc::new(AtomicU8::new(0));
    let since = Arc::new(AtomicU64::new(u64::MAX));
    let tx_out = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink {
        null: tx.pop().ok_or("no tx queue")?,
        ring: lat_prod,
        measure: measure.clone(),
        split: MbufBatch::new(),
        since: since.clone(),
        tx_samples: Vec::with_capacity(if args.latency_fanout > 0 {
            MAX_SAMPLES
        } else {
            0
        }),
        tx_out: tx_out.clone(),
    };

    let first = args.fanout.first().copied().unwrap_or(8);
    let mut tables = publish::channel(table(mac, first));
    let counters = Arc::new(CoreCounters::default());
    let tsc_hz = photon_dpdk::tsc_hz(eal);
    let parts = PipelineParts {
        ports: vec![PortIo {
            rx: relay_rx,
            tx: sink,
            from_control: None,
        }],
        header_pool,
        table: tables.reader(),
        dedup: Arc::new(Dedup::new(1 << 20, [rand_seed(), rand_seed()])),
        to_control,
        counters: counters.clone(),
        drain_tsc: tsc_hz / 10_000,
    };
    let quit = Arc::new(AtomicBool::new(false));
    let q = quit.clone();
    let relay_tid = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let tid = relay_tid.clone();
    let worker = lcore::spawn(eal, relay_core, "relay-bench", move |_| {
        tid.store(Interference::this_thread(), Ordering::Relaxed);
        let mut p: Pipeline<RingConsumer, Sink> = Pipeline::new(parts);
        p.run(&q);
        p.counters().clone()
    })
    .map_err(|e| e.to_string())?;

    let mut gen = Generator::new(mac);
    let mut results = Vec::new();
    for &f in &args.fanout {
        let g = tables.publish(table(mac, f));
        let deadline = Instant::now() + Duration::from_secs(5);
        while counters.table_generation() != g && Instant::now() < deadline {}
        let r = saturate(&frame_pool, &mut gen, &mut input, &counters, args.seconds);
        println!(
            "fan-out {f:>2}: in {:.3} Mpps, out {:.3} Mpps (input ring full {:.0}% of enqueue attempts; drops {})",
            r.input_pps / 1e6,
            r.output_pps / 1e6,
            r.ring_full_share * 100.0,
            r.drops
        );
        results.push((f, r));
    }

    let mut latency = None;
    if args.latency_fanout > 0 {
        let f = args.latency_fanout;
        let g = tables.publish(table(mac, f));
        while counters.table_generation() != g {}
        let max_in = match results.iter().find(|(x, _)| *x == f) {
            Some((_, r)) => r.input_pps,
            None => saturate(&frame_pool, &mut gen, &mut input, &counters, 1).input_pps,
        };
        measure.store(10 + f as u8 - 1, Ordering::Relaxed); // the last subscriber's MAC byte
        let me = Interference::this_thread();
        let before = Interference::read(relay_core, relay_tid.load(Ordering::Relaxed));
        let gen_before = Interference::read(main_core, me);
        let l = paced(
            &frame_pool,
            &mut gen,
            &mut input,
            &mut lat_ring,
            &since,
            Pace {
                rate: max_in / 2.0,
                tsc_hz,
                seconds: args.seconds,
            },
        );
        let after = Interference::read(relay_core, relay_tid.load(Ordering::Relaxed));
        let gen_after = Interference::read(main_core, me);
        latency = Some((
            f,
            max_in / 2.0,
            l,
            before.zip(after),
            gen_before.zip(gen_after),
        ));
        measure.store(0, Ordering::Relaxed);
    }

    quit.store(true, Ordering::Relaxed);
    let final_counters = worker
        .join()
        .map_err(|_| "relay thread panicked")?
        .map_err(|e| e.to_string())?;
    let mut b = MbufBatch::new();
    while lat_ring.dequeue(&mut b) > 0 {
        b.clear();
    }

    println!();
    println!("| relay core, {PAYLOAD} B payload | input Mpps | output Mpps | output / testpmd |");
    println!("|---------------------------|-----------:|------------:|-----------------:|");
    if let Some(r) = reference {
        println!(
            "| dpdk-testpmd io-forward   |          - | {:>11.3} |            1.000 |",
            r / 1e6
        );
    }
    for (f, r) in &results {
        let ratio = reference.map_or("-".to_string(), |t| format!("{:.3}", r.output_pps / t));
        println!(
            "| photon-relay fan-out {f:>2}   | {:>10.3} | {:>11.3} | {ratio:>16} |",
            r.input_pps / 1e6,
            r.output_pps / 1e6
        );
    }
    if let (Some(t), Some((_, r))) = (reference, results.iter().find(|(f, _)| *f == 8)) {
        println!(
            "\nfan-out 8 output / testpmd = {:.3} (goal >= 0.5)",
            r.output_pps / t
        );
    }
    if let Some((f, rate, l, interference, gen_interference)) = latency {
        match l {
            Some(l) => println!(
                "\nadded latency at fan-out {f}, {:.3} Mpps in (half load), last copy of each of {} fragments: p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us (generator stamp -> copy dequeued: includes two rte_ring hand-offs)",
                rate / 1e6,
                l.0,
                l.1,
                l.2,
                l.3
            ),
            None => println!("\nlatency: no copies came back"),
        }
        let tx = std::mem::take(&mut *tx_out.lock().map_err(|_| "latency samples poisoned")?);
        if !tx.is_empty() {
            let (n, p50, p99, p999) = quantiles(tx, tsc_hz);
            println!(
                "added latency on the relay core (generator stamp -> the relay hands the last copy to TX; no output ring, no drain thread), {n} fragments: p50 {p50:.2} us, p99 {p99:.2} us, p99.9 {p999:.2} us"
            );
        }
        for (who, core, i) in [
            ("relay", relay_core, interference),
            ("generator (stamps and drains)", main_core, gen_interference),
        ] {
            if let Some((b, a)) = i {
                println!(
                    "while it ran, the {who} core (core {core}) lost {} ms to the hypervisor (steal, /proc/stat) and its thread waited {:.1} ms runnable behind other tasks over {} involuntary switches (/proc/<tid>/schedstat, status)",
                    a.steal_ms.saturating_sub(b.steal_ms),
                    a.wait_ns.saturating_sub(b.wait_ns) as f64 / 1e6,
                    a.involuntary.saturating_sub(b.involuntary),
                );
            }
        }
    }
    println!(
        "\nrelay core totals: rx {} tx {} fragments {} copies {} dedup hits {} drops {} (no_mbuf {}, tx_full {})",
        final_counters.get(Counter::RxPackets),
        final_counters.get(Counter::TxPackets),
        final_counters.get(Counter::Fragments),
        final_counters.get(Counter::FanoutCopies),
        final_counters.get(Counter::DedupHits),
        final_counters.drops(),
        final_counters.get(Counter::Drop(DropReason::NoMbuf)),
        final_counters.get(Counter::Drop(DropReason::TxFull)),
    );
    Ok(())
}

fn rand_seed() -> u64 {
    // No rand dependency in perf: the TSC is seed enough for a benchmark's dedup table.
    photon_dpdk::rdtsc().wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Offers frames as fast as the relay takes them for warm-up + `seconds`; rates from the
/// relay core's published counters.
fn saturate(
    pool: &Mempool,
    gen: &mut Generator,
    input: &mut RingProducer,
    counters: &CoreCounters,
    seconds: u64,
) -> Rates {
    let mut batch = MbufBatch::new();
    let warm = Instant::now() + Duration::from_millis(500);
    let end = warm + Duration::from_secs(seconds);
    let mut start: Option<(Instant, u64, u64, u64)> = None;
    let (mut attempts, mut full) = (0u64, 0u64);
    loop {
        if batch.len() < 32 {
            fill(pool, gen, &mut batch, 32, 0);
        }
        let n = input.enqueue(&mut batch);
        let now = Instant::now();
        if start.is_some() {
            attempts += 1;
            full += u64::from(n == 0);
        }
        if start.is_none() && now >= warm {
            let c = counters.snapshot();
            start = Some((
                now,
                c.get(Counter::RxPackets),
                c.get(Counter::TxPackets),
                c.drops(),
            ));
        }
        if now >= end {
            break;
        }
    }
    // Let the published counters catch up with the last drain interval before reading them.
    std::thread::sleep(Duration::from_millis(1));
    let c = counters.snapshot();
    let now = Instant::now();
    let (t0, rx0, tx0, d0) = start.unwrap_or((now, 0, 0, 0));
    let dt = now.duration_since(t0).as_secs_f64().max(1e-9);
    batch.clear();
    Rates {
        input_pps: (c.get(Counter::RxPackets) - rx0) as f64 / dt,
        output_pps: (c.get(Counter::TxPackets) - tx0) as f64 / dt,
        ring_full_share: if attempts == 0 {
            0.0
        } else {
            full as f64 / attempts as f64
        },
        drops: c.drops() - d0,
    }
}

/// Offers `rate` frames per second with TSC stamps, drains the copies and returns
/// (copies, p50, p99, p99.9) in microseconds.
/// The latency phase's offered load: `rate` fragments per second for `seconds` (after half a
/// second of warm-up), on a TSC of `tsc_hz`.
struct Pace {
    rate: f64,
    tsc_hz: u64,
    seconds: u64,
}

fn paced(
    pool: &Mempool,
    gen: &mut Generator,
    input: &mut RingProducer,
    output: &mut RingConsumer,
    since: &AtomicU64,
    pace: Pace,
) -> Option<(usize, f64, f64, f64)> {
    let Pace {
        rate,
        tsc_hz,
        seconds,
    } = pace;
    let mut samples: Vec<u64> = Vec::with_capacity(MAX_SAMPLES);
    let mut batch = MbufBatch::new();
    let mut out = MbufBatch::new();
    let t0 = photon_dpdk::rdtsc();
    let warm = t0 + tsc_hz / 2;
    since.store(warm, Ordering::Relaxed);
    let end = warm + tsc_hz * seconds;
    let per_tick = rate / tsc_hz as f64;
    let mut sent = 0u64;
    loop {
        let now = photon_dpdk::rdtsc();
        if now >= end + tsc_hz / 10 {
            break;
        }
        if now < end {
            let due = ((now - t0) as f64 * per_tick) as u64;
            if due > sent {
                let want = (due - sent).min(8) as usize;
                fill(pool, gen, &mut batch, want, photon_dpdk::rdtsc());
                sent += input.enqueue(&mut batch) as u64;
                batch.clear(); // never queue stale stamps: a frame not taken now is dropped
            }
        }
        output.dequeue(&mut out);
        let now = photon_dpdk::rdtsc();
        for m in out.drain() {
            let Some(stamp) = stamp_of(&m) else {
                continue;
            };
            if stamp >= warm && samples.len() < MAX_SAMPLES {
                samples.push(now.saturating_sub(stamp));
            }
        }
    }
    if samples.is_empty() {
        return None;
    }
    Some(quantiles(samples, tsc_hz))
}

/// Samples (TSC ticks) → (count, p50, p99, p99.9 in µs).
fn quantiles(mut samples: Vec<u64>, tsc_hz: u64) -> (usize, f64, f64, f64) {
    samples.sort_unstable();
    let us = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
        samples
            .get(i)
            .map_or(0.0, |&t| t as f64 * 1e6 / tsc_hz as f64)
    };
    (samples.len(), us(0.50), us(0.99), us(0.999))
}

/// Most latency samples kept per measurement.
const MAX_SAMPLES: usize = 8 << 20;

/// What took the relay core away from the relay during a measurement: the hypervisor (steal
/// time of the core) and the guest's scheduler (time the thread waited runnable, involuntary
/// context switches). Read from procfs; `None` where it is not readable.
#[derive(Debug, Clone, Copy)]
struct Interference {
    steal_ms: u64,
    wait_ns: u64,
    involuntary: u64,
}

impl Interference {
    /// The calling thread's id (from `/proc/thread-self`), 0 if unknown.
    fn this_thread() -> u32 {
        std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .unwrap_or(0)
    }

    fn read(core: usize, tid: u32) -> Option<Interference> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let name = format!("cpu{core}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&name))?;
        // user nice system idle iowait irq softirq steal, in USER_HZ (100 per second) ticks.
        let steal: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
        let task = format!("/proc/self/task/{tid}");
        let sched = std::fs::read_to_string(format!("{task}/schedstat")).ok()?;
        let wait_ns = sched.split_whitespace().nth(1)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("{task}/status")).ok()?;
        let involuntary = status
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()?;
        Some(Interference {
            steal_ms: steal * 10,
            wait_ns,
            involuntary,
        })
    }
}
