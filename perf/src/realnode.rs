//! Real full nodes written by others, driven for tests, the demo and the baselines: start,
//! stop, and their JSON-RPC (mine, send, best block, mempool, peers, bans).
//!
//! [`Bcoin`] runs bcoin (installed by `scripts/setup.sh` into `perf/nodes/bcoin`) on regtest.
//! Each node's console log goes to `bcoin.log` in its folder. Every node started is killed when its handle drops: on a test's failure (unwinding), on
//! the end of a run, and on Ctrl-C (the node is in the terminal's process group and gets the
//! same SIGINT).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What can go wrong with a real node.
#[derive(Debug, thiserror::Error)]
pub enum RealNodeError {
    /// The node's software is not installed where it is looked for.
    #[error("{what} not found at {path}: run scripts/setup.sh (it installs Node.js and bcoin)")]
    NotInstalled { what: &'static str, path: PathBuf },
    #[error("start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} did not answer RPC within {waited:?} (log: {log})")]
    NotReady {
        name: String,
        waited: Duration,
        log: PathBuf,
    },
    #[error("{name} rpc {method}: {message}")]
    Rpc {
        name: String,
        method: String,
        message: String,
    },
    #[error("{name}: {what} not reached within {waited:?}")]
    Timeout {
        name: String,
        what: String,
        waited: Duration,
    },
}

/// Where and how one bcoin node runs.
#[derive(Debug, Clone)]
pub struct BcoinConfig {
    /// Names the node in errors and its data folder.
    pub name: String,
    /// Data folder (chain, wallet, `regtest/debug.log`). Made if missing.
    pub dir: PathBuf,
    /// Address its P2P, RPC and wallet RPC bind to.
    pub host: Ipv4Addr,
    pub p2p_port: u16,
    pub http_port: u16,
    pub wallet_port: u16,
    /// Chain and mempool in memory (`--memory`): gone when the node stops.
    pub memory: bool,
    /// The only peers it connects out to (`--only`); empty: none (regtest has no seeds).
    pub connect: Vec<SocketAddr>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Largest block weight its miner builds (`--max-weight`); `None`: bcoin's default.
    pub max_weight: Option<u64>,
}

impl BcoinConfig {
    /// A node on loopback, in `dir/name`, on three ports free when asked (P2P, RPC, wallet
    /// RPC).
    pub fn loopback(name: &str, dir: &Path) -> Self {
        let [p2p_port, http_port, wallet_port] = free_tcp_ports();
        BcoinConfig {
            name: name.to_string(),
            dir: dir.join(name),
            host: Ipv4Addr::LOCALHOST,
            p2p_port,
            http_port,
            wallet_port,
            memory: true,
            connect: Vec::new(),
            netns: None,
            max_weight: None,
        }
    }

    pub fn p2p_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.p2p_port))
    }
}

const API_KEY: &str = "photon";
const LOG_FILE: &str = "bcoin.log";
const READY_WAIT: Duration = Duration::from_secs(60);

/// A node's JSON-RPC endpoint, for other threads ([`Bcoin::rpc_handle`]).
#[derive(Clone)]
pub struct RpcClient {
    name: String,
    url: String,
    agent: ureq::Agent,
}

impl RpcClient {
    /// A call; the `result`, or the node's `error`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RealNodeError> {
        let err = |message: String| RealNodeError::Rpc {
            name: self.name.clone(),
            method: method.to_string(),
            message,
        };
        let resp = self
            .agent
            .post(&self.url)
            .send_json(json!({"method": method, "params": params, "id": 1}));
        let body: Value = match resp {
            Ok(r) => r.into_json().map_err(|e| err(e.to_string()))?,
            Err(ureq::Error::Status(_, r)) => r.into_json().map_err(|e| err(e.to_string()))?,
            Err(e) => return Err(err(e.to_string())),
        };
        match body.get("error") {
            Some(e) if !e.is_null() => Err(err(e.to_string())),
            _ => Ok(body.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    pub fn best_block(&self) -> Result<String, RealNodeError> {
        match self.call("getbestblockhash", json!([]))? {
            Value::String(s) => Ok(s),
            v => Err(RealNodeError::Rpc {
                name: self.name.clone(),
                method: "getbestblockhash".into(),
                message: format!("expected a string, got {v}"),
            }),
        }
    }
}

/// A running bcoin node; killed on drop.
pub struct Bcoin {
    config: BcoinConfig,
    child: Option<Child>,
    agent: ureq::Agent,
}

impl fmt::Debug for Bcoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bcoin")
            .field("name", &self.config.name)
            .field("p2p", &self.config.p2p_addr())
            .finish()
    }
}

impl Bcoin {
    /// Where `scripts/setup.sh` installs bcoin (`PHOTON_BCOIN_DIR` overrides).
    pub fn install_dir() -> PathBuf {
        match std::env::var_os("PHOTON_BCOIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("nodes/bcoin"),
        }
    }

    /// The `bcoin` entry point, or why it is missing.
    pub fn program() -> Result<PathBuf, RealNodeError> {
        // bin/bcoin is a shell wrapper; bin/node is the full node itself.
        let bin = Self::install_dir().join("node_modules/bcoin/bin/node");
        if !bin.exists() {
            return Err(RealNodeError::NotInstalled {
                what: "bcoin",
                path: bin,
            });
        }
        let node = Path::new("/usr/bin/node");
        if !node.exists() && which("node").is_none() {
            return Err(RealNodeError::NotInstalled {
                what: "Node.js (node)",
                path: node.to_path_buf(),
            });
        }
        Ok(bin)
    }

    /// Start the node and wait until its RPC answers.
    pub fn start(config: BcoinConfig) -> Result<Bcoin, RealNodeError> {
        let bin = Self::program()?;
        std::fs::create_dir_all(&config.dir).map_err(|source| RealNodeError::Spawn {
            name: config.name.clone(),
            source,
        })?;
        let mut args: Vec<String> = vec![
            "--network=regtest".into(),
            format!("--prefix={}", config.dir.display()),
            format!("--wallet-prefix={}", config.dir.display()),
            format!("--memory={}", config.memory),
            "--workers=false".into(),
            "--listen=true".into(),
            format!("--host={}", config.host),
            format!("--port={}", config.p2p_port),
            format!("--http-host={}", config.host),
            format!("--http-port={}", config.http_port),
            format!("--wallet-http-host={}", config.host),
            format!("--wallet-http-port={}", config.wallet_port),
            format!("--api-key={API_KEY}"),
            // The console log, to a file of ours: bcoin writes no log file of its own with
            // `--memory`.
            "--log-level=debug".into(),
            "--log-console=true".into(),
        ];
        // Without `--only`, bcoin dials regtest's seed, 127.0.0.1:48444 (nobody there: our
        // nodes listen on other ports, or on their namespace's address); it takes no
        // `--max-outbound=0`.
        if !config.connect.is_empty() {
            let peers: Vec<String> = config.connect.iter().map(|a| a.to_string()).collect();
            args.push(format!("--only={}", peers.join(",")));
        }
        if let Some(w) = config.max_weight {
            args.push(format!("--max-weight={w}"));
        }
        let mut cmd = match &config.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "node"]).arg(&bin);
                c
            }
            None => {
                let mut c = Command::new("node");
                c.arg(&bin);
                c
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.dir.join(LOG_FILE))
            .map_err(|source| RealNodeError::Spawn {
                name: config.name.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| RealNodeError::Spawn {
            name: config.name.clone(),
            source,
        })?;
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| RealNodeError::Spawn {
                name: config.name.clone(),
                source,
            })?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let node = Bcoin {
            config,
            child: Some(child),
            agent,
        };
        node.wait_ready()?;
        Ok(node)
    }

    pub fn config(&self) -> &BcoinConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn p2p_addr(&self) -> SocketAddr {
        self.config.p2p_addr()
    }

    /// The node's log (its console, at debug level, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.config.dir.join(LOG_FILE)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_ready(&self) -> Result<(), RealNodeError> {
        let start = Instant::now();
        while start.elapsed() < READY_WAIT {
            let p2p = TcpStream::connect_timeout(&self.p2p_addr(), Duration::from_millis(200));
            if p2p.is_ok() && self.rpc("getblockcount", json!([])).is_ok() {
                // The wallet plugin opens after the node's RPC.
                if self.wallet_rpc("getbalance", json!([])).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(RealNodeError::NotReady {
            name: self.config.name.clone(),
            waited: READY_WAIT,
            log: self.log_path(),
        })
    }

    /// A call to the node's JSON-RPC.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, RealNodeError> {
        self.call(self.config.http_port, method, params)
    }

    /// A call to the wallet's JSON-RPC (the `primary` wallet).
    pub fn wallet_rpc(&self, method: &str, params: Value) -> Result<Value, RealNodeError> {
        self.call(self.config.wallet_port, method, params)
    }

    fn call(&self, port: u16, method: &str, params: Value) -> Result<Value, RealNodeError> {
        self.client(port).call(method, params)
    }

    fn client(&self, port: u16) -> RpcClient {
        // ureq sends the URL's user and password as basic auth (bcoin: any user, the key).
        RpcClient {
            name: self.config.name.clone(),
            url: format!("http://x:{API_KEY}@{}:{port}/", self.config.host),
            agent: self.agent.clone(),
        }
    }

    /// The node's RPC, for another thread.
    pub fn rpc_handle(&self) -> RpcClient {
        self.client(self.config.http_port)
    }

    /// Make a wallet `id` whose addresses are segwit (P2WPKH): what it sends spends witness
    /// outputs.
    pub fn witness_wallet(&self, id: &str) -> Result<(), RealNodeError> {
        self.wallet_http("PUT", &format!("wallet/{id}"), json!({"witness": true}))
            .map(|_| ())
    }

    /// A new address of the `primary` wallet.
    pub fn new_address(&self) -> Result<String, RealNodeError> {
        self.new_address_in("primary")
    }

    /// A new receiving address of wallet `id`. (bcoin 1.0.2's RPC `getnewaddress` prints
    /// regtest addresses in mainnet form; its HTTP API does not.)
    pub fn new_address_in(&self, id: &str) -> Result<String, RealNodeError> {
        let v = self.wallet_http(
            "POST",
            &format!("wallet/{id}/address"),
            json!({"account": "default"}),
        )?;
        self.string(v["address"].clone(), "address")
    }

    /// Mine `n` blocks to `address`; their hashes, oldest first.
    pub fn mine(&self, n: u32, address: &str) -> Result<Vec<String>, RealNodeError> {
        let v = self.rpc("generatetoaddress", json!([n, address]))?;
        Ok(strings(&v))
    }

    /// Pay `sats` to `address` from the `primary` wallet; the txid.
    pub fn send_to(&self, address: &str, sats: u64) -> Result<String, RealNodeError> {
        self.send_from("primary", address, sats)
    }

    /// Pay `sats` to `address` from wallet `id`; the txid.
    pub fn send_from(&self, id: &str, address: &str, sats: u64) -> Result<String, RealNodeError> {
        let v = self.wallet_http(
            "POST",
            &format!("wallet/{id}/send"),
            json!({"outputs": [{"address": address, "value": sats}]}),
        )?;
        self.string(v["hash"].clone(), "send")
    }

    /// One transaction from the `primary` wallet paying `sats` to `address` in each of
    /// `outputs` outputs, spending confirmed coins only, oldest first (so that transactions
    /// made in a row do not chain on each other's change); the txid.
    pub fn wallet_http_send(
        &self,
        address: &str,
        sats: u64,
        outputs: u32,
    ) -> Result<String, RealNodeError> {
        let outs: Vec<Value> = (0..outputs)
            .map(|_| json!({"address": address, "value": sats}))
            .collect();
        let v = self.wallet_http(
            "POST",
            "wallet/primary/send",
            json!({"outputs": outs, "depth": 1, "selection": "age"}),
        )?;
        self.string(v["hash"].clone(), "send")
    }

    fn wallet_http(&self, verb: &str, path: &str, body: Value) -> Result<Value, RealNodeError> {
        let url = format!(
            "http://x:{API_KEY}@{}:{}/{path}",
            self.config.host, self.config.wallet_port
        );
        let err = |message: String| RealNodeError::Rpc {
            name: self.config.name.clone(),
            method: format!("{verb} /{path}"),
            message,
        };
        match self.agent.request(verb, &url).send_json(body) {
            Ok(r) => r.into_json().map_err(|e| err(e.to_string())),
            Err(ureq::Error::Status(code, r)) => Err(err(format!(
                "{code}: {}",
                r.into_string().unwrap_or_default()
            ))),
            Err(e) => Err(err(e.to_string())),
        }
    }

    pub fn best_block(&self) -> Result<String, RealNodeError> {
        let v = self.rpc("getbestblockhash", json!([]))?;
        self.string(v, "getbestblockhash")
    }

    pub fn height(&self) -> Result<u64, RealNodeError> {
        let v = self.rpc("getblockcount", json!([]))?;
        Ok(v.as_u64().unwrap_or(0))
    }

    /// The hash of the block at `height` on the node's best chain.
    pub fn block_hash(&self, height: u64) -> Result<String, RealNodeError> {
        let v = self.rpc("getblockhash", json!([height]))?;
        self.string(v, "getblockhash")
    }

    /// The txids in the node's mempool.
    pub fn mempool(&self) -> Result<Vec<String>, RealNodeError> {
        let v = self.rpc("getrawmempool", json!([]))?;
        Ok(strings(&v))
    }

    /// `getpeerinfo`.
    pub fn peers(&self) -> Result<Vec<Value>, RealNodeError> {
        let v = self.rpc("getpeerinfo", json!([]))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// `listbanned`.
    pub fn banned(&self) -> Result<Vec<Value>, RealNodeError> {
        let v = self.rpc("listbanned", json!([]))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Make `hash` invalid (`invalidateblock`): the node goes back to its parent.
    pub fn invalidate(&self, hash: &str) -> Result<(), RealNodeError> {
        self.rpc("invalidateblock", json!([hash])).map(|_| ())
    }

    /// Wait until `ok` holds for the node (polled every 20 ms).
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Bcoin) -> bool,
    ) -> Result<Duration, RealNodeError> {
        let start = Instant::now();
        loop {
            if ok(self) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(RealNodeError::Timeout {
                    name: self.config.name.clone(),
                    what: what.to_string(),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the node's tip is `hash`.
    pub fn wait_tip(&self, hash: &str, timeout: Duration) -> Result<Duration, RealNodeError> {
        self.wait_until(&format!("tip {hash}"), timeout, |n| {
            n.best_block().is_ok_and(|b| b == hash)
        })
    }

    /// Lines of the node's log that show it punishing or dropping a peer (ban score,
    /// misbehaviour, unrequested data, bans).
    pub fn misbehaviour_lines(&self) -> Vec<String> {
        const SIGNS: [&str; 6] = [
            "banscore",
            "Ban for",
            "unrequested",
            "misbehav",
            "Banning",
            "increaseBan",
        ];
        self.log()
            .lines()
            .filter(|l| SIGNS.iter().any(|s| l.contains(s)))
            .map(String::from)
            .collect()
    }

    /// Stop the node (RPC `stop`, then kill if it lingers).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.rpc("stop", json!([]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn string(&self, v: Value, method: &str) -> Result<String, RealNodeError> {
        v.as_str()
            .map(String::from)
            .ok_or_else(|| RealNodeError::Rpc {
                name: self.config.name.clone(),
                method: method.to_string(),
                message: format!("expected a string, got {v}"),
            })
    }
}

impl Drop for Bcoin {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The strings of a JSON array (none if it is not one).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Three loopback TCP ports nobody listened on when asked (bound together, then released).
fn free_tcp_ports() -> [u16; 3] {
    let bind = || std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok();
    let l = [bind(), bind(), bind()];
    let port = |l: &Option<std::net::TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    };
    [port(&l[0]), port(&l[1]), port(&l[2])]
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}
