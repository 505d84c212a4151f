//! The first benchmark: a minimal io-forward loop on our binding vs dpdk-testpmd.
//!
//! Both forward between two net_null virtual devices (port 0 RX → port 1 TX and back) on one
//! pinned core, for the same duration, one after the other in the same run. net_null's RX hands
//! out mbufs from the pool and its TX frees them, so the loop measures the binding's burst path.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use photon_dpdk::{lcore, Eal, MbufBatch, Mempool, Port, PortConfig, RxQueue, TxQueue};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds each side forwards (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    /// Core for the forwarding loop (default: the last core; the main thread uses the first).
    #[arg(long)]
    pub(crate) core: Option<usize>,
    /// The testpmd binary (Debian's dpdk-dev package installs dpdk-testpmd).
    #[arg(long, default_value = "dpdk-testpmd")]
    pub(crate) testpmd: String,
    /// Skip the testpmd reference (prints only our rate).
    #[arg(long)]
    pub(crate) no_testpmd: bool,
    /// Alternate testpmd and our loop this many times and report the median of each (evens
    /// out other load on the machine).
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: u32,
}

const EAL_COMMON: [&str; 5] = ["--no-huge", "--no-shconf", "--no-pci", "-m", "1024"];

/// The cores of a one-core benchmark: the main core (first available), the measured core
/// (`requested`, or the last available) and the list of all of them for `taskset`. Ask before
/// `Eal::init`, which narrows this thread's affinity.
pub(crate) fn bench_cores(requested: Option<usize>) -> Result<(usize, usize, String), String> {
    let cores = lcore::available_cores();
    let main_core = *cores.first().ok_or("no CPU core available")?;
    let work_core = requested.unwrap_or(*cores.last().ok_or("no CPU core available")?);
    let all = cores
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    Ok((main_core, work_core, all))
}

pub fn run(args: &Args) -> Result<(), String> {
    let (main_core, fwd_core, all_cores) = bench_cores(args.core)?;
    println!(
        "io-forward net_null0 <-> net_null1 on core {fwd_core}: {} round(s), {}s per side per round after 1s warm-up",
        args.rounds, args.seconds
    );

    let (eal, mut queues) = photon_setup(main_core)?;
    let (mut reference, mut ours) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        if !args.no_testpmd {
            let r = testpmd(args, &all_cores, main_core, fwd_core)?;
            println!("round {round}: dpdk-testpmd {:.2} Mpps", r / 1e6);
            reference.push(r);
        }
        let (o, q) = photon_round(&eal, queues, fwd_core, args.seconds)?;
        queues = q;
        println!("round {round}: photon-dpdk  {:.2} Mpps", o / 1e6);
        ours.push(o);
    }
    let ours = median(&mut ours);
    println!();
    println!(
        "| forwarder (one core, 2 x net_null, burst 32) | Mpps, median of {} |",
        args.rounds.max(1)
    );
    println!("|----------------------------------------------|--------------------|");
    let reference = (!reference.is_empty()).then(|| median(&mut reference));
    if let Some(r) = reference {
        println!(
            "| dpdk-testpmd --forward-mode=io                | {:>18.2} |",
            r / 1e6
        );
    }
    println!(
        "| photon-dpdk io-forward loop                   | {:>18.2} |",
        ours / 1e6
    );
    if let Some(r) = reference {
        println!("\nratio photon / testpmd = {:.3} (goal >= 0.9)", ours / r);
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs testpmd for warm-up + `seconds` with a 1 s stats period and averages the per-period
/// RX rates of both ports after warm-up.
pub(crate) fn testpmd(
    args: &Args,
    all_cores: &str,
    main_core: usize,
    fwd_core: usize,
) -> Result<f64, String> {
    let lcores = format!("{main_core},{fwd_core}");
    // taskset: our own EAL narrowed this process's affinity, which a child would inherit.
    // stdbuf: line-buffered, so every periodic statistics block reaches the log before SIGINT.
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", all_cores, "stdbuf", "-oL", &args.testpmd]);
    cmd.args(["-l", &lcores])
        .args(EAL_COMMON)
        .args(["--file-prefix", "photon_testpmd"]);
    cmd.args(["--vdev", "net_null0", "--vdev", "net_null1", "--"]);
    cmd.args([
        "--forward-mode=io",
        "--auto-start",
        "--stats-period",
        "1",
        "--nb-cores=1",
    ]);
    // testpmd's periodic statistics go to a file: through a pipe they stay in its stdio buffer.
    let log_path = std::env::temp_dir().join(format!("photon-testpmd-{}.log", std::process::id()));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}); install dpdk-dev (scripts/setup.sh) or pass --no-testpmd",
                args.testpmd
            )
        })?;
    // Poll the log until `seconds` one-second periods with traffic follow a warm-up period
    // (testpmd needs a few seconds to create its pool before forwarding starts).
    let deadline = Instant::now() + Duration::from_secs(args.seconds + 60);
    let text = loop {
        std::thread::sleep(Duration::from_millis(250));
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let busy = period_rates(&text).len();
        if busy > args.seconds as usize
            || Instant::now() > deadline
            || child.try_wait().ok().flatten().is_some()
        {
            break text;
        }
    };
    // testpmd prints its totals and frees its ports on SIGINT.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    child.wait().map_err(|e| format!("testpmd: {e}"))?;
    if std::env::var_os("PHOTON_KEEP_TESTPMD_LOG").is_none() {
        let _ = std::fs::remove_file(&log_path);
    }
    // The first period with traffic is warm-up.
    let periods: Vec<f64> = period_rates(&text)
        .into_iter()
        .skip(1)
        .take(args.seconds as usize)
        .collect();
    if periods.is_empty() {
        return Err(format!(
            "could not read testpmd's rates; its output ended with:\n{}",
            tail(&text, 20)
        ));
    }
    let avg = periods.iter().sum::<f64>() / periods.len() as f64;
    Ok(avg)
}

/// Packets per second of each stats period with traffic: testpmd prints one `Rx-pps:` line
/// per port (two ports) per period.
fn period_rates(text: &str) -> Vec<f64> {
    let pps: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Rx-pps:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    pps.chunks_exact(2)
        .map(|c| c[0] + c[1])
        .filter(|&p| p > 0.0)
        .collect()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

type Queues = [(RxQueue, TxQueue); 2];

/// Starts our EAL (once per process) with the two net_null ports.
fn photon_setup(main_core: usize) -> Result<(Eal, Queues), String> {
    let lcores = format!("{main_core}");
    let mut eal_args = vec!["photon-perf", "-l", &lcores];
    eal_args.extend(EAL_COMMON);
    eal_args.extend([
        "--file-prefix",
        "photon_iofwd",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
    ]);
    let eal = Eal::init(&eal_args).map_err(|e| e.to_string())?;
    let pool = Mempool::new(&eal, "iofwd", 8191, 256, Mempool::DEFAULT_DATA_ROOM)
        .map_err(|e| e.to_string())?;
    let mut queues = Vec::new();
    for name in ["net_null0", "net_null1"] {
        let id = Port::id_by_name(&eal, name).map_err(|e| e.to_string())?;
        let (_port, rx, tx) =
            Port::start(&eal, id, &PortConfig::default(), &pool).map_err(|e| e.to_string())?;
        queues.push((
            rx.into_iter().next().ok_or("no rx queue")?,
            tx.into_iter().next().ok_or("no tx queue")?,
        ));
    }
    let q1 = queues.pop().ok_or("port 1")?;
    let q0 = queues.pop().ok_or("port 0")?;
    Ok((eal, [q0, q1]))
}

/// Our loop: the same shape as testpmd's io engine (burst of 32 from one port, burst to the
/// other, free what TX refused), on a thread pinned to `fwd_core` and registered as an lcore.
fn photon_round(
    eal: &Eal,
    queues: Queues,
    fwd_core: usize,
    seconds: u64,
) -> Result<(f64, Queues), String> {
    let handle = lcore::spawn(eal, fwd_core, "iofwd", move |_| {
        let [mut q0, mut q1] = queues;
        let mut batch = MbufBatch::new();
        let mut forwarded = 0u64;
        let warm_until = Instant::now() + Duration::from_secs(1);
        let mut measuring: Option<(Instant, u64)> = None;
        let end = warm_until + Duration::from_secs(seconds);
        let mut iter = 0u32;
        loop {
            // port 0 → port 1
            if q0.0.rx_burst(&mut batch) > 0 {
                forwarded += q1.1.tx_burst(&mut batch) as u64;
                batch.clear();
            }
            // port 1 → port 0
            if q1.0.rx_burst(&mut batch) > 0 {
                forwarded += q0.1.tx_burst(&mut batch) as u64;
                batch.clear();
            }
            iter = iter.wrapping_add(1);
            if iter.is_multiple_of(1024) {
                let now = Instant::now();
                if measuring.is_none() && now >= warm_until {
                    measuring = Some((now, forwarded));
                }
                if now >= end {
                    let (t0, f0) = measuring.unwrap_or((now, forwarded));
                    let pps =
                        (forwarded - f0) as f64 / now.duration_since(t0).as_secs_f64().max(1e-9);
                    return (pps, [q0, q1]);
                }
            }
        }
    })
    .map_err(|e| e.to_string())?;
    handle
        .join()
        .map_err(|_| "forwarding thread panicked")?
        .map_err(|e| e.to_string())
}
