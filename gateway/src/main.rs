//! `photon-gateway`: `keygen --out <file>` writes a new identity; `run --config <file>` runs the
//! gateway beside a Bitcoin node (configs/gateway.toml documents the config).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use photon_gateway::config::{public_key_hex, Config};
use photon_gateway::driver::{self, DriverConfig};
use photon_gateway::metrics::Metrics;
use photon_gateway::node::{Backoff, NodeConfig};
use photon_protocol::identity::Identity;
use ring::rand::SystemRandom;

#[derive(Parser)]
#[command(
    name = "photon-gateway",
    about = "The Photon gateway beside a Bitcoin node"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a new Ed25519 identity (PKCS#8, mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the public key of an identity file.
    Pubkey {
        #[arg(long)]
        key: PathBuf,
    },
    /// Run the gateway.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

fn keygen(out: &Path, force: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let id = Identity::generate(&SystemRandom::new()).map_err(|e| format!("keygen: {e}"))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(out).map_err(|e| {
        format!(
            "cannot create {}: {e} (use --force to overwrite)",
            out.display()
        )
    })?;
    f.write_all(id.to_pkcs8_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("{}", public_key_hex(&id.public_key()));
    Ok(())
}

fn load_identity(path: &Path) -> Result<Identity, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read identity.key_file {}: {e} (create one with `photon-gateway keygen --out {}`)",
            path.display(),
            path.display()
        )
    })?;
    Identity::from_pkcs8_bytes(&bytes)
        .map_err(|e| format!("identity.key_file {}: {e}", path.display()))
}

fn init_logs(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to files stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let r = config.resolve(base).map_err(|e| e.to_string())?;
    init_logs(&r.log.level, r.log.format == "json");
    let identity = load_identity(&r.key_file)?;
    let metrics = Metrics::new();
    if let Some(addr) = r.metrics_listen {
        let bound = metrics
            .bind_and_serve(addr)
            .map_err(|e| format!("metrics.listen {addr}: {e}"))?;
        tracing::info!(%bound, "serving /metrics");
    }
    let handle = driver::spawn(
        DriverConfig {
            core: r.core,
            listen: r.listen,
            node_addr: r.node_addr,
            node: NodeConfig::new(r.network),
            node_backoff: Backoff::default(),
            recv_batch: r.recv_batch,
            event_queue: 0,
            hugepages: true,
            recv_buffer: r.recv_buffer,
            stage_log: r.stage_log,
        },
        identity,
        Some(metrics),
    )
    .map_err(|e| e.to_string())?;
    // Runs until killed; the driver thread owns everything.
    loop {
        std::thread::park();
        let _ = handle.local_addr();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Keygen { out, force } => keygen(&out, force),
        Cmd::Pubkey { key } => {
            load_identity(&key).map(|id| println!("{}", public_key_hex(&id.public_key())))
        }
        Cmd::Run { config } => run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("photon-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
