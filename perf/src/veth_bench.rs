//! The relay's two backends on the same af_packet/veth testbed: packets per second through one
//! relay core (`photon-perf veth-bench`), DPDK (af_packet PMD on the relay namespace's veth) and
//! the kernel-socket backend (recvmmsg/sendmmsg), measured one after the other in the same run
//! with the same generator, fan-out and frames.
//!
//! Set-up per backend: `scripts/testbed.sh up --gateways 1+F --relays 1 --sw-checksums` (no
//! rate limit; `--relay-no-ip` for DPDK, which answers ARP for the relay's address itself), a
//! relay with static-key peers: the generator (gateway namespace 0, peer relay 2, not
//! subscribed) and F subscribed sinks. A sink is an address outside every namespace's own
//! (10.77.200.x) bound to the MAC of gateway namespace x's veth in the relay's neighbour table
//! (DPDK: `[[neighbour]]`; socket: a permanent ARP entry in the relay namespace), so each copy
//! crosses the bridge into that namespace, is counted by its veth (`rx_packets`) and dropped by
//! its kernel without an ICMP answer (not its address, no forwarding).
//!
//! The generator (`photon-perf veth-gen`, in gateway namespace 0) sends signed source-shard
//! datagrams (a new (stream, index) each, so dedup admits every one) as fast as one core's
//! sendmmsg allows, for `--seconds`. Figures: the generator's offered rate, the relay's
//! forwarded fragments and fan-out copies (its exit line), and what the sinks' veths received,
//! all over the generator's window. On the 2-core development machine the generator and the
//! relay core share the 2 cores with the kernel's veth work, so read the figures as a
//! comparison of the backends under the same load, not as either's ceiling.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use photon_protocol::hopauth::HopKey;
use photon_protocol::wire::HEADER_LEN;
use photon_udp::BatchSend;

use crate::relay_bench::{generator_fragment, set_seq};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backends, in the order measured.
    #[arg(long, value_delimiter = ',', default_value = "dpdk,socket")]
    backends: Vec<String>,
    /// Seconds the generator sends per backend.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Subscribed sinks (copies per fragment).
    #[arg(long, default_value_t = 8)]
    fanout: usize,
    /// Rounds over all backends.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Fragment payload bytes (a full shard is 1196).
    #[arg(long, default_value_t = 1196)]
    payload: usize,
    /// Testbed namespace prefix.
    #[arg(long, default_value = "phvb")]
    prefix: String,
    /// The photon-relay binary (default: beside this one).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
}

/// `photon-perf veth-gen`: the generator, run inside the generator's namespace.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    #[arg(long)]
    bind: SocketAddr,
    #[arg(long)]
    to: SocketAddr,
    #[arg(long)]
    seconds: f64,
    #[arg(long)]
    payload: usize,
    /// The hop key the relay verifies our fragments with (32 hex digits).
    #[arg(long)]
    key: String,
    /// Our node id at the relay.
    #[arg(long)]
    sender: u32,
}

const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const RELAY_PORT: u16 = 4433;
const GEN_PORT: u16 = 4500;
const GEN_ID: u32 = 2;

fn gateway_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn sink_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 200, 1 + i as u8)
}

fn key_bytes(seed: u8) -> [u8; 16] {
    std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_key(s: &str) -> Result<[u8; 16], String> {
    if s.len() != 32 {
        return Err(format!("key {s:?}: 32 hex digits expected"));
    }
    let mut k = [0u8; 16];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| format!("key: {e}"))?;
    }
    Ok(k)
}

/// Runs the generator; prints `sent=<n> seconds=<s> dropped=<n>` on stdout.
pub fn run_gen(args: &GenArgs) -> Result<(), String> {
    let key = HopKey::from_bytes(&parse_key(&args.key)?);
    let sock = UdpSocket::bind(args.bind).map_err(|e| format!("bind {}: {e}", args.bind))?;
    let payload = vec![
        0x5au8;
        args.payload
            .clamp(1, photon_protocol::wire::max_fragment_payload())
    ];
    let mut template = vec![0u8; HEADER_LEN + payload.len()];
    let len = generator_fragment(&payload)
        .emit(args.sender, 0, 0, &mut template)
        .map_err(|e| format!("emit: {e}"))?;
    let mut batch = BatchSend::new();
    let mut seq: u64 = 0;
    let mut sent: u64 = 0;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.seconds);
    while Instant::now() < until {
        while let Some(slot) = batch.slot() {
            let out = &mut slot[..len];
            out.copy_from_slice(&template[..len]);
            set_seq(out, seq);
            seq += 1;
            key.sign_header(&mut out[..HEADER_LEN])
                .map_err(|e| format!("sign: {e}"))?;
            batch.commit(len, args.to);
        }
        sent += batch.flush(&sock).map_err(|e| format!("sendmmsg: {e}"))? as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent={sent} seconds={secs:.6} dropped={}", batch.dropped);
    Ok(())
}

/// One backend's figures over the generator's window.
#[derive(Debug, Clone, Default)]
struct Figures {
    offered: u64,
    seconds: f64,
    gen_dropped: u64,
    relay_fragments: u64,
    relay_copies: u64,
    relay_drops: u64,
    sink_rx: u64,
}

fn sh(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} {:?} failed: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn testbed(args: &[&str]) -> Result<String, String> {
    sh(Command::new("bash")
        .arg(repo_root().join("scripts/testbed.sh"))
        .args(args))
}

fn ns(prefix: &str, node: &str) -> String {
    format!("{prefix}-{node}")
}

fn mac_of(namespace: &str) -> Result<String, String> {
    let out = sh(Command::new("ip").args(["-n", namespace, "-o", "link", "show", "eth0"]))?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| format!("no MAC for eth0 in {namespace}"))
}

fn rx_packets(namespace: &str) -> Result<u64, String> {
    let out = sh(Command::new("ip").args([
        "netns",
        "exec",
        namespace,
        "cat",
        "/sys/class/net/eth0/statistics/rx_packets",
    ]))?;
    out.trim()
        .parse()
        .map_err(|e| format!("rx_packets in {namespace}: {e}"))
}

/// The relay's configuration for this bench (both backends read the same file).
fn relay_config(fanout: usize, macs: &[String]) -> String {
    let mut c = format!(
        "[relay]\nnode_id = 1\nip = \"{RELAY_IP}\"\nprefix_len = 16\nudp_port = {RELAY_PORT}\n\
         cores = [1]\nmain_core = 0\n\n\
         [eal]\nfile_prefix = \"photon-vb\"\nno_huge = true\nmemory_mb = 512\n\
         args = [\"--no-shconf\", \"--log-level\", \"lib.eal:notice\"]\n\n\
         [[port]]\nname = \"net_af_packet0\"\n\
         vdev = \"net_af_packet0,iface=eth0,qdisc_bypass=1,framecnt=4096\"\n\n\
         [control]\nidentity_file = \"relay.key\"\ngateways = []\n\n\
         [socket]\nbind = \"{RELAY_IP}:{RELAY_PORT}\"\nrecv_buffer = 33554432\n\
         send_buffer = 33554432\n\n[metrics]\nenabled = false\n\n[log]\nlevel = \"info\"\n"
    );
    c += &format!(
        "\n[[neighbour]]\nip = \"{}\"\nmac = \"{}\"\n\n[[peer]]\nnode_id = {GEN_ID}\n\
         addr = \"{}:{GEN_PORT}\"\nsubscribed = false\nsend_key = \"{}\"\nrecv_key = \"{}\"\n",
        gateway_ip(0),
        macs[0],
        gateway_ip(0),
        hex(&key_bytes(200)),
        hex(&key_bytes(GEN_ID as u8)),
    );
    for i in 0..fanout {
        c += &format!(
            "\n[[neighbour]]\nip = \"{}\"\nmac = \"{}\"\n\n[[peer]]\nnode_id = {}\n\
             addr = \"{}:{GEN_PORT}\"\nsubscribed = true\nsend_key = \"{}\"\nrecv_key = \"{}\"\n",
            sink_ip(i),
            macs[1 + i],
            10 + i,
            sink_ip(i),
            hex(&key_bytes(100 + i as u8)),
            hex(&key_bytes(150 + i as u8)),
        );
    }
    c
}

/// The text without ANSI escape sequences (`ESC [ ... letter`), as a terminal would show it.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads `key=value` from the relay's exit line.
fn exit_field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

struct Relay {
    child: Child,
    log: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn measure(args: &Args, backend: &str, relay_bin: &Path, dir: &Path) -> Result<Figures, String> {
    let prefix = args.prefix.as_str();
    let gateways = (1 + args.fanout).to_string();
    let mut up = vec![
        "up",
        "--gateways",
        &gateways,
        "--relays",
        "1",
        "--prefix",
        prefix,
        "--sw-checksums",
    ];
    if backend == "dpdk" {
        up.push("--relay-no-ip");
    }
    testbed(&up)?;
    let result = (|| -> Result<Figures, String> {
        let relay_ns = ns(prefix, "r0");
        let macs = (0..=args.fanout)
            .map(|i| mac_of(&ns(prefix, &format!("g{i}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if backend == "socket" {
            for (i, mac) in macs[1..].iter().enumerate() {
                let ip = sink_ip(i).to_string();
                sh(Command::new("ip").args([
                    "-n",
                    &relay_ns,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ]))?;
            }
        }
        let config = dir.join(format!("relay-{backend}.toml"));
        std::fs::write(&config, relay_config(args.fanout, &macs))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let log = dir.join(format!("relay-{backend}.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &relay_ns])
            .arg(relay_bin)
            .args(["run", "--backend", backend, "--config"])
            .arg(&config)
            .stdout(Stdio::from(
                log_file.try_clone().map_err(|e| e.to_string())?,
            ))
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| format!("{}: {e}", relay_bin.display()))?;
        let mut relay = Relay { child, log };
        wait_running(&mut relay)?;
        let sinks: Vec<String> = (1..=args.fanout)
            .map(|i| ns(prefix, &format!("g{i}")))
            .collect();
        let before: u64 = sinks
            .iter()
            .map(|s| rx_packets(s))
            .sum::<Result<u64, _>>()?;
        let gen_out = sh(Command::new("ip")
            .args(["netns", "exec", &ns(prefix, "g0")])
            .arg(std::env::current_exe().map_err(|e| e.to_string())?)
            .args([
                "veth-gen",
                "--bind",
                &SocketAddrV4::new(gateway_ip(0), GEN_PORT).to_string(),
                "--to",
                &SocketAddrV4::new(RELAY_IP, RELAY_PORT).to_string(),
                "--seconds",
                &args.seconds.to_string(),
                "--payload",
                &args.payload.to_string(),
                "--key",
                &hex(&key_bytes(GEN_ID as u8)),
                "--sender",
                &GEN_ID.to_string(),
            ]))?;
        std::thread::sleep(Duration::from_millis(300));
        let after: u64 = sinks
            .iter()
            .map(|s| rx_packets(s))
            .sum::<Result<u64, _>>()?;
        let pid = relay.child.id().to_string();
        let _ = sh(Command::new("kill").args(["-INT", &pid]));
        let deadline = Instant::now() + Duration::from_secs(20);
        while relay.child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                return Err("the relay did not stop within 20 s of SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = strip_ansi(&std::fs::read_to_string(&relay.log).map_err(|e| e.to_string())?);
        let exit = text
            .lines()
            .find(|l| l.contains("stopped cleanly"))
            .ok_or_else(|| format!("no exit line in {}", relay.log.display()))?;
        let f = |k| exit_field(exit, k).unwrap_or(0);
        Ok(Figures {
            offered: exit_field(&gen_out, "sent").unwrap_or(0),
            seconds: gen_out
                .split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
                .and_then(|s| s.parse().ok())
                .unwrap_or(args.seconds),
            gen_dropped: exit_field(&gen_out, "dropped").unwrap_or(0),
            relay_fragments: f("fragments"),
            relay_copies: f("copies"),
            relay_drops: f("drops"),
            sink_rx: after.saturating_sub(before),
        })
    })();
    let down = testbed(&["down", "--prefix", prefix]);
    let figures = result?;
    down?;
    Ok(figures)
}

fn wait_running(relay: &mut Relay) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&relay.log).unwrap_or_default();
        if text.contains("socket backend running") || text.contains("DPDK data path running") {
            return Ok(());
        }
        if let Some(status) = relay.child.try_wait().map_err(|e| e.to_string())? {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n");
            return Err(format!("the relay exited at start ({status}):\n{tail}"));
        }
        if Instant::now() > deadline {
            return Err("the relay did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `photon-perf veth-bench`.
pub fn run(args: &Args) -> Result<(), String> {
    if !(1..=250).contains(&args.fanout) {
        return Err("--fanout must be 1..=250".into());
    }
    for b in &args.backends {
        if b != "dpdk" && b != "socket" {
            return Err(format!("--backends: {b:?} is neither dpdk nor socket"));
        }
    }
    let relay_bin = match &args.relay_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("photon-relay"),
    };
    let dir = std::env::temp_dir().join(format!("photon-veth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    sh(Command::new(&relay_bin)
        .args(["keygen", "--force", "--out"])
        .arg(dir.join("relay.key")))?;
    println!(
        "relay backends on the af_packet/veth testbed: 1 relay core, fan-out {}, {} B payloads, \
         {} s per run; rates over the generator's window (Mpps)",
        args.fanout, args.payload, args.seconds
    );
    println!(
        "{:<7} {:>5} {:>9} {:>10} {:>11} {:>10} {:>9} {:>11}",
        "backend", "round", "offered", "relay in", "relay out", "sinks rx", "drops", "gen refused"
    );
    let mut rows = Vec::new();
    for round in 1..=args.rounds {
        for backend in &args.backends {
            let f = measure(args, backend, &relay_bin, &dir)?;
            let mpps = |n: u64| n as f64 / f.seconds / 1e6;
            println!(
                "{:<7} {:>5} {:>9.3} {:>10.3} {:>11.3} {:>10.3} {:>9} {:>11}",
                backend,
                round,
                mpps(f.offered),
                mpps(f.relay_fragments),
                mpps(f.relay_copies),
                mpps(f.sink_rx),
                f.relay_drops,
                f.gen_dropped
            );
            rows.push((backend.clone(), f));
        }
    }
    for backend in &args.backends {
        let best = rows
            .iter()
            .filter(|(b, _)| b == backend)
            .map(|(_, f)| f.relay_copies as f64 / f.seconds / 1e6)
            .fold(0.0f64, f64::max);
        println!("{backend}: best relay output {best:.3} Mpps on one relay core");
    }
    if std::env::var_os("PHOTON_VETH_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("configs and relay logs kept in {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_line_fields_are_read_through_ansi_colours() {
        let line = "\u{1b}[2m2026\u{1b}[0m photon-relay stopped cleanly \u{1b}[3mrx\u{1b}[0m\u{1b}[2m=\u{1b}[0m9220 \u{1b}[3mfragments\u{1b}[0m\u{1b}[2m=\u{1b}[0m250 copies=1750";
        let plain = strip_ansi(line);
        assert_eq!(exit_field(&plain, "rx"), Some(9220));
        assert_eq!(exit_field(&plain, "fragments"), Some(250));
        assert_eq!(exit_field(&plain, "copies"), Some(1750));
        assert_eq!(exit_field(&plain, "drops"), None);
    }

    #[test]
    fn keys_parse_back_from_hex() {
        assert_eq!(parse_key(&hex(&key_bytes(7))), Ok(key_bytes(7)));
        assert!(parse_key("00").is_err());
        assert!(parse_key(&"zz".repeat(16)).is_err());
    }
}
