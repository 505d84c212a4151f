//! `photon-relay`: the relay binary.
//!
//! ```text
//! photon-relay run --config configs/relay.toml [--backend dpdk|socket]
//! photon-relay keygen --out relay.key [--force]
//! ```
//!
//! `run` loads the TOML configuration (every setting documented in `configs/relay.toml`), the
//! relay's identity from `control.identity_file`, serves `/metrics` on `metrics.listen`, and
//! runs until SIGINT or SIGTERM, then stops the data path (every mbuf returned) and exits 0.
//! Errors say what to change and exit 1.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use photon_protocol::identity::Identity;
use photon_relay::config::Config;
use photon_relay::control::{self, hex32, Control, ControlShared};
use photon_relay::counters::{self, Counter};
use photon_relay::metrics::{render, LogFormat, MetricsServer};
use photon_relay::socket::{SocketRelay, SocketRelayConfig};
use photon_relay::stages::StageLog;
use ring::rand::SystemRandom;

#[derive(Parser, Debug)]
#[command(
    name = "photon-relay",
    version,
    about = "Photon relay: cut-through fan-out of block fragments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "configs/relay.toml")]
        config: PathBuf,
        /// Data path: DPDK poll-mode drivers, or kernel UDP sockets (no DPDK NIC needed).
        #[arg(long, value_enum, default_value_t = Backend::Dpdk)]
        backend: Backend,
    },
    /// Create an Ed25519 identity (PKCS#8, mode 0600) and print its public key.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Dpdk,
    Socket,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { out, force } => keygen(&out, force),
        Command::Run { config, backend } => run(&config, backend),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "photon-relay stopped");
            eprintln!("photon-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(out: &Path, force: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let id = Identity::generate(&SystemRandom::new())
        .map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists: pass --force to overwrite it (the old identity is lost)",
                out.display()
            )
        } else {
            format!("cannot create {}: {e}", out.display())
        }
    })?;
    f.write_all(id.to_pkcs8_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("{}", hex32(&id.public_key().0));
    Ok(())
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to files stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The identity file, relative to the config file's folder when relative.
fn load_identity(cfg: &Config, config_path: &Path) -> Result<Identity, String> {
    let Some(path) = &cfg.control.identity_file else {
        return Err(
            "control.identity_file is not set: create a key with `photon-relay keygen \
                    --out relay.key` and set control.identity_file = \"relay.key\""
                .into(),
        );
    };
    let path = if path.is_relative() {
        config_path.parent().unwrap_or(Path::new(".")).join(path)
    } else {
        path.clone()
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "control.identity_file {}: {e} (create it with `photon-relay keygen --out {}`)",
            path.display(),
            path.display()
        )
    })?;
    // The key bytes are never logged or printed; only whether they parsed.
    Identity::from_pkcs8_bytes(&bytes).map_err(|e| {
        format!(
            "control.identity_file {}: {e} (expected the file `photon-relay keygen` writes)",
            path.display()
        )
    })
}

fn quit_on_signals() -> Result<Arc<AtomicBool>, String> {
    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, quit.clone())
            .map_err(|e| format!("cannot install the handler for signal {sig}: {e}"))?;
    }
    Ok(quit)
}

fn run(config_path: &Path, backend: Backend) -> Result<(), String> {
    let cfg = Config::load(config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    init_logging(&cfg);
    let identity = load_identity(&cfg, config_path)?;
    let quit = quit_on_signals()?;
    tracing::info!(
        config = %config_path.display(),
        backend = ?backend,
        node_id = cfg.relay.node_id,
        public_key = %hex32(&identity.public_key().0),
        "photon-relay starting"
    );
    match backend {
        Backend::Socket => run_socket(&cfg, identity, &quit),
        Backend::Dpdk => run_dpdk(&cfg, identity, &quit),
    }
}

fn start_metrics(
    cfg: &Config,
    render_fn: Arc<dyn Fn() -> String + Send + Sync>,
) -> Result<Option<MetricsServer>, String> {
    if !cfg.metrics.enabled {
        return Ok(None);
    }
    let server = MetricsServer::start(cfg.metrics.listen, render_fn).map_err(|e| e.to_string())?;
    tracing::info!(listen = %server.local_addr(), "serving /metrics");
    Ok(Some(server))
}

fn run_socket(cfg: &Config, identity: Identity, quit: &AtomicBool) -> Result<(), String> {
    let sc = SocketRelayConfig::from_config(cfg).map_err(|e| e.to_string())?;
    let mut relay = SocketRelay::bind(sc, identity).map_err(|e| e.to_string())?;
    let stats = relay.stats();
    let s = stats.clone();
    let metrics = start_metrics(
        cfg,
        Arc::new(move || render(std::slice::from_ref(&s.core), Some(&s.control))),
    )?;
    tracing::info!(listen = %relay.local_addr(), "socket backend running");
    relay.run(quit).map_err(|e| e.to_string())?;
    if let Some(m) = metrics {
        m.stop();
    }
    let c = stats.core.snapshot();
    tracing::info!(
        rx = c.get(Counter::RxPackets),
        fragments = c.get(Counter::Fragments),
        copies = c.get(Counter::FanoutCopies),
        drops = c.drops(),
        "photon-relay stopped cleanly"
    );
    Ok(())
}

fn run_dpdk(cfg: &Config, identity: Identity, quit: &AtomicBool) -> Result<(), String> {
    use photon_relay::dataplane::{DataPlane, StartError};
    // Opened first: a bad path fails before the EAL and the ports start.
    let mut stages = match cfg.perf.stage_log() {
        Some((path, node)) => Some(
            StageLog::open(&path, &node)
                .map_err(|e| format!("cannot open perf.stage_log {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let eal = photon_dpdk::Eal::init(&cfg.eal_args()).map_err(|e| {
        let hint = if cfg.eal.no_huge {
            "check the [eal] and [[port]] settings"
        } else {
            "no hugepages? reserve them with scripts/setup.sh, or set eal.no_huge = true and \
             eal.memory_mb = 1024 (testing only); a wrong [[port]].pci address also fails here \
             (list devices with `dpdk-devbind.py -s`), or use --backend socket"
        };
        format!("{e}\n  hint: {hint}")
    })?;
    let eal: &'static photon_dpdk::Eal = Box::leak(Box::new(eal));
    let (dataplane, mut link) = DataPlane::start(eal, cfg).map_err(|e| match &e {
        StartError::Port { name, .. } => format!(
            "{e}\n  hint: [[port]] name {name:?} must be the DPDK device name: the PCI address \
             given as `pci` (bound to vfio-pci by scripts/setup.sh) or the vdev's name"
        ),
        _ => e.to_string(),
    })?;
    let (peers, unresolved) = cfg.peer_specs();
    let (arp_peers, unreachable): (Vec<_>, Vec<_>) =
        unresolved.into_iter().partition(|u| u.next_hop.is_some());
    if !unreachable.is_empty() {
        tracing::warn!(
            peers = ?unreachable.iter().map(|u| u.spec.node_id).collect::<Vec<_>>(),
            "peer relays off-link with no relay.gateway have no next hop: they are not \
             reachable; set relay.gateway (or put them on-link)"
        );
    }
    if !arp_peers.is_empty() {
        tracing::info!(
            peers = ?link.unresolved_peers,
            next_hops = ?arp_peers.iter().filter_map(|u| u.next_hop).collect::<Vec<_>>(),
            "peer relays without a [[neighbour]] MAC for their next hop: resolving by ARP \
             (they join the forwarding table when the next hop answers)"
        );
    }
    let mut settings = cfg.control.settings().map_err(|e| e.to_string())?;
    // Cached fragments pin pool mbufs here: the pools were sized for dataplane.repair_mbufs.
    settings.repair_cache_fragments = settings
        .repair_cache_fragments
        .min(cfg.dataplane.repair_mbufs as usize)
        .max(1);
    let mut control = Control::new(
        identity,
        link.local.clone(),
        peers,
        settings,
        Arc::new(SystemRandom::new()),
    )
    .map_err(|e| e.to_string())?;
    control
        .resolve_by_arp(
            control::ArpResolver::new(cfg.static_neighbours()),
            arp_peers
                .into_iter()
                .filter_map(|u| Some((u.spec, u.next_hop?)))
                .collect(),
            control::unix_ms(),
        )
        .map_err(|e| format!("ARP resolution of the peer relays' next hops: {e}"))?;
    let shared = Arc::new(ControlShared::new());
    let cores = dataplane.counters().to_vec();
    let s = shared.clone();
    let metrics = start_metrics(cfg, Arc::new(move || render(&cores, Some(&s))))?;
    tracing::info!(cores = ?cfg.relay.cores, "DPDK data path running");
    let drops = control::dpdk::run_with_stages(
        &mut link,
        &mut control,
        &shared,
        quit,
        Duration::from_millis(100),
        stages.as_mut(),
    );
    drop(stages);
    tracing::info!(?drops, "control core stopped");
    let finals = dataplane.stop()?;
    drop(link);
    if let Some(m) = metrics {
        m.stop();
    }
    let total = finals
        .iter()
        .fold(counters::LocalCounters::default(), |mut a, c| {
            for counter in Counter::all() {
                a.add(counter, c.get(counter));
            }
            a
        });
    tracing::info!(
        rx = total.get(Counter::RxPackets),
        fragments = total.get(Counter::Fragments),
        copies = total.get(Counter::FanoutCopies),
        drops = total.drops(),
        "photon-relay stopped cleanly"
    );
    Ok(())
}
