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

use clap::{Parser, Subcommand, ValueEnum};
use photon_protocol::identity::Identity;
use photon_relay::ops::config::Config;
use photon_relay::ops::metrics::{self, render};
use photon_relay::socket::SocketRelay;

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
    let key = photon_ops::keys::keygen(out, force)?;
    println!("{key}");
    Ok(())
}

fn init_logging(cfg: &Config) {
    photon_ops::log::init(&cfg.log.level, cfg.log.format);
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
    photon_ops::keys::load(&path, "control.identity_file", "photon-relay")
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
        public_key = %identity.public_key(),
        "photon-relay starting"
    );
    match backend {
        Backend::Socket => run_socket(&cfg, identity, &quit),
        #[cfg(feature = "dpdk")]
        Backend::Dpdk => photon_relay::dpdk::run::run(&cfg, identity, &quit),
        #[cfg(not(feature = "dpdk"))]
        Backend::Dpdk => Err("this photon-relay was built without the `dpdk` feature: \
                              use --backend socket, or rebuild with default features"
            .into()),
    }
}

fn run_socket(cfg: &Config, identity: Identity, quit: &AtomicBool) -> Result<(), String> {
    let sc = cfg.socket_relay().map_err(|e| e.to_string())?;
    let mut relay = SocketRelay::bind(sc, identity).map_err(|e| e.to_string())?;
    let stats = relay.stats();
    let s = stats.clone();
    let metrics = metrics::serve(
        &cfg.metrics,
        Arc::new(move || render(std::slice::from_ref(&s.core), Some(&s.control))),
    )?;
    tracing::info!(listen = %relay.local_addr(), "socket backend running");
    relay.run(quit).map_err(|e| e.to_string())?;
    if let Some(m) = metrics {
        m.stop();
    }
    stats.core.snapshot().log_stopped();
    Ok(())
}
