//! `photon-gateway`: `keygen --out <file>` writes a new identity; `run --config <file>` runs the
//! gateway beside a Bitcoin node (configs/gateway.toml documents the config); `roster ...`
//! creates, signs, inspects and verifies a deployment's membership roster (the operator's
//! tool, `photon_ops::roster`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use photon_gateway::config::Config;
use photon_gateway::driver::{self, DriverConfig};
use photon_gateway::metrics::Metrics;
use photon_gateway::node::Backoff;
use photon_protocol::identity::{Identity, PublicKey};

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
    /// The deployment's membership roster (docs/protocol/8-threat-model.md).
    #[command(subcommand)]
    Roster(RosterCmd),
}

#[derive(Subcommand)]
enum RosterCmd {
    /// Write the unsigned roster of a TOML spec (serial, expires_unix_s, [[gateway]] key,
    /// [[relay]] key short_id_first short_id_count).
    Create {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Add an operator's signature (its identity file, from `keygen`) to a roster file.
    Sign {
        #[arg(long)]
        roster: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Print a roster file as text (no trust check).
    Inspect {
        #[arg(long)]
        roster: PathBuf,
    },
    /// Check a roster file: signed by enough of the operators, not expired, and (with
    /// --current) newer than the roster held now.
    Verify {
        #[arg(long)]
        roster: PathBuf,
        /// An operator public key (64 hex digits); repeat for several.
        #[arg(long = "operator", required = true)]
        operators: Vec<PublicKey>,
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// Unix seconds to check the expiry against (default: now).
        #[arg(long)]
        now: Option<u64>,
        #[arg(long)]
        current: Option<PathBuf>,
    },
}

fn roster(cmd: RosterCmd) -> Result<(), String> {
    use photon_ops::roster as r;
    let roster = match cmd {
        RosterCmd::Create { spec, out } => r::create(&spec, &out)?,
        RosterCmd::Sign { roster, key } => r::sign(&roster, &key)?,
        RosterCmd::Inspect { roster } => r::read(&roster)?,
        RosterCmd::Verify {
            roster,
            operators,
            threshold,
            now,
            current,
        } => {
            let now = now.unwrap_or_else(r::unix_now_s);
            let v = r::verify(&roster, &operators, threshold, now, current.as_deref())?;
            println!("# valid: serial {}, {} members", v.serial, v.members.len());
            v
        }
    };
    print!("{}", r::describe(&roster));
    Ok(())
}

fn keygen(out: &Path, force: bool) -> Result<(), String> {
    println!("{}", photon_ops::keys::keygen(out, force)?);
    Ok(())
}

fn load_identity(path: &Path) -> Result<Identity, String> {
    photon_ops::keys::load(path, "identity.key_file", "photon-gateway")
}

fn run(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let r = config.resolve(base).map_err(|e| e.to_string())?;
    photon_ops::log::init(&r.log.level, r.log.format);
    let identity = load_identity(&r.key_file)?;
    let metrics = Metrics::new();
    // Kept for the life of the process: dropping it stops the responder.
    let _metrics_server = match r.metrics_listen {
        Some(addr) => {
            let server = metrics.serve(addr).map_err(|e| e.to_string())?;
            tracing::info!(bound = %server.local_addr(), "serving /metrics");
            Some(server)
        }
        None => None,
    };
    let handle = driver::spawn(
        DriverConfig {
            core: r.core,
            listen: r.listen,
            node_addr: r.node_addr,
            node: r.node,
            node_backoff: Backoff::default(),
            recv_batch: r.recv_batch,
            event_queue: 0,
            hugepages: true,
            recv_buffer: r.recv_buffer,
            stage_log: r.stage_log,
            roster_watch: r.roster_watch,
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
        Cmd::Pubkey { key } => load_identity(&key).map(|id| println!("{}", id.public_key())),
        Cmd::Run { config } => run(&config),
        Cmd::Roster(cmd) => roster(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("photon-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
