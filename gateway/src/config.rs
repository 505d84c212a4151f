//! The gateway's TOML configuration. `configs/gateway.toml` documents every setting.
//!
//! Unknown keys are errors (`deny_unknown_fields`), and every error names the key or the file
//! so the operator knows what to change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use photon_protocol::fec::RepairPolicy;
use photon_protocol::identity::PublicKey;
use photon_protocol::shortid::TxStoreConfig;
use serde::Deserialize;

use crate::core::{
    BlockEncoding, CoreConfig, Delivery, KeyReleasePolicy, PeerEndpoint, RelayEndpoint,
};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The TOML does not parse or a key is unknown / of the wrong type (toml's message names it).
    #[error("config file {path}: {error}")]
    Parse { path: PathBuf, error: String },
    /// A value parses but is not usable.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub identity: IdentitySection,
    pub node: NodeSection,
    pub network: NetworkSection,
    #[serde(default)]
    pub relays: Vec<RelaySection>,
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    #[serde(default)]
    pub key_release: KeyReleaseSection,
    #[serde(default)]
    pub block: BlockSection,
    #[serde(default)]
    pub tx_store: TxStoreSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub perf: PerfSection,
}

/// Measurement output for the testbed's propagation report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerfSection {
    /// JSON-lines stage records (`perf/README.md`) appended here; absent: none.
    pub stage_log: Option<PathBuf>,
    /// The `node` field of the records. Default "gateway".
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// PKCS#8 Ed25519 key written by `photon-gateway keygen`. Relative to the config file.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// host:port of the node's P2P port.
    pub address: String,
    #[serde(default = "default_network")]
    pub network: String,
    /// push | announce | compact
    #[serde(default = "default_delivery")]
    pub delivery: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// UDP address we bind for relays and peers.
    pub listen: String,
    #[serde(default = "default_uplink")]
    pub uplink_mbps: f64,
    #[serde(default = "default_repair")]
    pub repair_percent: f64,
    #[serde(default = "default_keepalive")]
    pub keepalive_ms: u64,
    #[serde(default = "default_quiet")]
    pub link_quiet_ms: u64,
    #[serde(default = "default_register_retry")]
    pub register_retry_ms: u64,
    #[serde(default = "default_fallback")]
    pub peer_fallback_ms: u64,
    #[serde(default)]
    pub originate_via_peers: bool,
    #[serde(default)]
    pub trusted_origins: Vec<String>,
    #[serde(default = "default_batch")]
    pub recv_batch: usize,
    #[serde(default = "default_recv_buffer")]
    pub recv_buffer_kb: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    pub address: String,
    pub public_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub address: String,
    pub public_key: String,
    #[serde(default)]
    pub originate_for: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyReleaseSection {
    /// receipts | immediate
    #[serde(default = "default_policy")]
    pub policy: String,
    #[serde(default = "default_share")]
    pub share: f64,
    #[serde(default = "default_receivers")]
    pub receivers: u32,
    #[serde(default = "default_release_timeout")]
    pub timeout_ms: u64,
}

impl Default for KeyReleaseSection {
    fn default() -> Self {
        KeyReleaseSection {
            policy: default_policy(),
            share: default_share(),
            receivers: default_receivers(),
            timeout_ms: default_release_timeout(),
        }
    }
}

/// How our blocks go out (docs/protocol.md §6.8, §6.9): baselines for the perf runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSection {
    /// compact | bip152 | full
    #[serde(default = "default_encoding")]
    pub encoding: String,
    #[serde(default = "default_encrypt")]
    pub encrypt: bool,
}

impl Default for BlockSection {
    fn default() -> Self {
        BlockSection {
            encoding: default_encoding(),
            encrypt: default_encrypt(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxStoreSection {
    #[serde(default = "default_store_mb")]
    pub max_mb: u64,
    #[serde(default = "default_ttl")]
    pub ttl_s: u64,
}

impl Default for TxStoreSection {
    fn default() -> Self {
        TxStoreSection {
            max_mb: default_store_mb(),
            ttl_s: default_ttl(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// host:port for the Prometheus endpoint; absent: no endpoint.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// An EnvFilter directive (`info`, `photon_gateway=debug`...). RUST_LOG overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    /// text | json
    #[serde(default = "default_format")]
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: default_level(),
            format: default_format(),
        }
    }
}

fn default_network() -> String {
    "bitcoin".into()
}
fn default_delivery() -> String {
    "push".into()
}
fn default_uplink() -> f64 {
    100.0
}
fn default_repair() -> f64 {
    5.0
}
fn default_keepalive() -> u64 {
    1000
}
fn default_quiet() -> u64 {
    3000
}
fn default_register_retry() -> u64 {
    1000
}
fn default_fallback() -> u64 {
    500
}
fn default_batch() -> usize {
    32
}
fn default_recv_buffer() -> usize {
    8192
}
fn default_policy() -> String {
    "receipts".into()
}
fn default_share() -> f64 {
    0.5
}
fn default_receivers() -> u32 {
    1
}
fn default_release_timeout() -> u64 {
    3000
}
fn default_encoding() -> String {
    "compact".into()
}
fn default_encrypt() -> bool {
    true
}
fn default_store_mb() -> u64 {
    300
}
fn default_ttl() -> u64 {
    86_400
}
fn default_level() -> String {
    "info".into()
}
fn default_format() -> String {
    "text".into()
}

/// A public key in hex (64 digits).
pub fn parse_public_key(key: &str, s: &str) -> Result<PublicKey, ConfigError> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err(invalid(
            key,
            "expected 64 hex digits (an Ed25519 public key)",
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| invalid(key, "expected 64 hex digits (an Ed25519 public key)"))?;
    }
    Ok(PublicKey(out))
}

/// Hex of a public key, as the config wants it.
pub fn public_key_hex(k: &PublicKey) -> String {
    k.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| invalid(key, format!("`{s}` is not a host:port ({e})")))?
        .next()
        .ok_or_else(|| invalid(key, format!("`{s}` resolves to no address")))
}

/// The configuration, checked and turned into what the binary runs.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub key_file: PathBuf,
    pub node_addr: SocketAddr,
    pub network: bitcoin::Network,
    pub listen: SocketAddr,
    pub recv_batch: usize,
    /// Socket receive buffer, bytes.
    pub recv_buffer: usize,
    pub core: CoreConfig,
    pub metrics_listen: Option<SocketAddr>,
    pub log: LogSection,
    /// Where stage records go, and the node name they carry.
    pub stage_log: Option<(PathBuf, String)>,
}

impl Config {
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            error: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::from_toml(path, &text)
    }

    /// Checks every value; relative paths are taken from `base` (the config file's folder).
    pub fn resolve(&self, base: &Path) -> Result<Resolved, ConfigError> {
        let network = match self.node.network.as_str() {
            "bitcoin" | "mainnet" => bitcoin::Network::Bitcoin,
            "testnet" => bitcoin::Network::Testnet,
            "signet" => bitcoin::Network::Signet,
            "regtest" => bitcoin::Network::Regtest,
            other => {
                return Err(invalid(
                    "node.network",
                    format!("`{other}`: expected bitcoin, testnet, signet or regtest"),
                ))
            }
        };
        let delivery = match self.node.delivery.as_str() {
            "push" => Delivery::Push,
            "announce" => Delivery::Announce,
            "compact" => Delivery::Compact,
            other => {
                return Err(invalid(
                    "node.delivery",
                    format!("`{other}`: expected push, announce or compact"),
                ))
            }
        };
        let n = &self.network;
        if !(n.uplink_mbps > 0.0 && n.uplink_mbps.is_finite()) {
            return Err(invalid("network.uplink_mbps", "must be a positive number"));
        }
        if !(0.0..=100.0).contains(&n.repair_percent) {
            return Err(invalid("network.repair_percent", "must be within 0..=100"));
        }
        if n.keepalive_ms == 0 || n.link_quiet_ms <= n.keepalive_ms {
            return Err(invalid(
                "network.link_quiet_ms",
                "must be greater than network.keepalive_ms (> 0)",
            ));
        }
        if n.recv_batch == 0 || n.recv_batch > crate::udp::MAX_BATCH {
            return Err(invalid(
                "network.recv_batch",
                format!("must be within 1..={}", crate::udp::MAX_BATCH),
            ));
        }
        let mut core = CoreConfig::new();
        for (i, r) in self.relays.iter().enumerate() {
            core.relays.push(RelayEndpoint {
                addr: parse_addr(&format!("relays[{i}].address"), &r.address)?,
                public_key: parse_public_key(&format!("relays[{i}].public_key"), &r.public_key)?,
            });
        }
        for (i, p) in self.peers.iter().enumerate() {
            core.peers.push(PeerEndpoint {
                addr: parse_addr(&format!("peers[{i}].address"), &p.address)?,
                public_key: parse_public_key(&format!("peers[{i}].public_key"), &p.public_key)?,
                originate_for: p.originate_for,
            });
        }
        if core.relays.is_empty() && core.peers.is_empty() {
            return Err(invalid(
                "relays",
                "no relay and no peer: add at least one [[relays]] or [[peers]] entry",
            ));
        }
        for (i, k) in n.trusted_origins.iter().enumerate() {
            core.trusted_origins.push(parse_public_key(
                &format!("network.trusted_origins[{i}]"),
                k,
            )?);
        }
        core.uplink_bytes_per_sec = (n.uplink_mbps * 1e6 / 8.0) as u64;
        core.repair = RepairPolicy {
            overhead_permille: (n.repair_percent * 10.0).round() as u32,
            ..RepairPolicy::DEFAULT
        };
        core.keepalive = Duration::from_millis(n.keepalive_ms);
        core.link_quiet = Duration::from_millis(n.link_quiet_ms);
        core.register_retry = Duration::from_millis(n.register_retry_ms.max(10));
        core.peer_fallback = Duration::from_millis(n.peer_fallback_ms);
        core.originate_via_peers = n.originate_via_peers;
        if n.originate_via_peers && core.peers.is_empty() {
            return Err(invalid(
                "network.originate_via_peers",
                "is true but no [[peers]] are configured",
            ));
        }
        core.delivery = delivery;
        let k = &self.key_release;
        core.key_release = match k.policy.as_str() {
            "immediate" => KeyReleasePolicy::Immediate,
            "receipts" => {
                if !(0.0..=1.0).contains(&k.share) {
                    return Err(invalid("key_release.share", "must be within 0.0..=1.0"));
                }
                KeyReleasePolicy::Receipts {
                    share: k.share,
                    receivers: k.receivers,
                    timeout: Duration::from_millis(k.timeout_ms),
                }
            }
            other => {
                return Err(invalid(
                    "key_release.policy",
                    format!("`{other}`: expected receipts or immediate"),
                ))
            }
        };
        core.block_encoding = BlockEncoding::from_name(&self.block.encoding).ok_or_else(|| {
            invalid(
                "block.encoding",
                format!(
                    "`{}`: expected compact, bip152 or full",
                    self.block.encoding
                ),
            )
        })?;
        core.encrypt = self.block.encrypt;
        if self.tx_store.max_mb == 0 {
            return Err(invalid("tx_store.max_mb", "must be at least 1"));
        }
        core.tx_store = TxStoreConfig {
            max_bytes: usize::try_from(self.tx_store.max_mb << 20).unwrap_or(usize::MAX),
            ttl: Duration::from_secs(self.tx_store.ttl_s.max(1)),
        };
        let metrics_listen = match &self.metrics.listen {
            Some(s) => Some(parse_addr("metrics.listen", s)?),
            None => None,
        };
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "expected text or json"));
        }
        let stage_log = self.perf.stage_log.as_ref().map(|p| {
            let name = self
                .perf
                .node_name
                .clone()
                .unwrap_or_else(|| "gateway".into());
            (base.join(p), name)
        });
        if let Some(name) = &self.perf.node_name {
            if name.is_empty() || name.contains(['"', '\\']) || name.chars().any(char::is_control) {
                return Err(invalid(
                    "perf.node_name",
                    "must be non-empty, without quotes, backslashes or control characters",
                ));
            }
        }
        core.stage_records = stage_log.is_some();
        Ok(Resolved {
            key_file: base.join(&self.identity.key_file),
            node_addr: parse_addr("node.address", &self.node.address)?,
            network,
            listen: parse_addr("network.listen", &n.listen)?,
            recv_batch: n.recv_batch,
            recv_buffer: n.recv_buffer_kb.saturating_mul(1024),
            core,
            metrics_listen,
            log: self.log.clone(),
            stage_log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn minimal() -> String {
        format!(
            "[identity]\nkey_file = \"gw.key\"\n[node]\naddress = \"127.0.0.1:8333\"\n\
             [network]\nlisten = \"127.0.0.1:9000\"\n[[relays]]\naddress = \"127.0.0.1:9100\"\n\
             public_key = \"{KEY}\"\n"
        )
    }

    #[test]
    fn perf_stage_log_resolves_beside_the_config() {
        let text = format!(
            "{}[perf]\nstage_log = \"s.jsonl\"\nnode_name = \"gw3\"\n",
            minimal()
        );
        let c = Config::from_toml(Path::new("x.toml"), &text).unwrap();
        let r = c.resolve(Path::new("/etc/photon")).unwrap();
        assert_eq!(
            r.stage_log,
            Some((PathBuf::from("/etc/photon/s.jsonl"), "gw3".into()))
        );
        assert!(r.core.stage_records);
        let r = Config::from_toml(Path::new("x.toml"), &minimal())
            .unwrap()
            .resolve(Path::new("/"))
            .unwrap();
        assert_eq!(r.stage_log, None);
        assert!(!r.core.stage_records);
        let bad = format!(
            "{}[perf]\nstage_log = \"s\"\nnode_name = \"a\\\"b\"\n",
            minimal()
        );
        let e = Config::from_toml(Path::new("x.toml"), &bad)
            .unwrap()
            .resolve(Path::new("/"))
            .unwrap_err();
        assert!(e.to_string().contains("perf.node_name"), "{e}");
    }

    #[test]
    fn the_example_config_parses_and_resolves() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/gateway.toml"
        ));
        let c = Config::load(path).expect("configs/gateway.toml parses");
        let r = c.resolve(Path::new("/etc/photon")).expect("and resolves");
        assert_eq!(r.core.relays.len(), 2);
        assert_eq!(r.core.key_release.receipts_needed(), 2);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(Path::new("x.toml"), &minimal()).unwrap();
        let r = c.resolve(Path::new("/cfg")).unwrap();
        assert_eq!(r.key_file, Path::new("/cfg/gw.key"));
        assert_eq!(r.core.uplink_bytes_per_sec, 12_500_000);
        assert_eq!(r.core.repair.overhead_permille, 50);
        assert_eq!(r.core.key_release.receipts_needed(), 1);
        assert_eq!(r.core.peer_fallback, Duration::from_millis(500));
        assert_eq!(r.core.block_encoding, BlockEncoding::Compact);
        assert!(r.core.encrypt);
    }

    #[test]
    fn block_section_sets_encoding_and_encryption() {
        for (name, want) in [
            ("compact", BlockEncoding::Compact),
            ("bip152", BlockEncoding::Bip152Sized),
            ("full", BlockEncoding::Full),
        ] {
            let text = format!(
                "{}[block]\nencoding = \"{name}\"\nencrypt = false\n",
                minimal()
            );
            let r = Config::from_toml(Path::new("x.toml"), &text)
                .unwrap()
                .resolve(Path::new("/"))
                .unwrap();
            assert_eq!(r.core.block_encoding, want);
            assert!(!r.core.encrypt);
        }
        let text = format!("{}[block]\nencoding = \"bip-152\"\n", minimal());
        let e = Config::from_toml(Path::new("x.toml"), &text)
            .unwrap()
            .resolve(Path::new("/"))
            .unwrap_err();
        assert!(e.to_string().contains("block.encoding"), "{e}");
        let text = format!("{}[block]\nencrypt = \"no\"\n", minimal());
        assert!(Config::from_toml(Path::new("x.toml"), &text).is_err());
    }

    #[test]
    fn unknown_key_is_named() {
        let text = minimal().replace("[node]\n", "[node]\nadress = \"x\"\n");
        let e = Config::from_toml(Path::new("x.toml"), &text).unwrap_err();
        assert!(e.to_string().contains("adress"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("public_key = \"01", "relays[0].public_key"),
            ("listen = \"127.0.0.1:9000\"", "network.listen"),
        ];
        let text = minimal().replace(cases[0].0, "public_key = \"zz");
        let e = Config::from_toml(Path::new("x.toml"), &text)
            .unwrap()
            .resolve(Path::new("."))
            .unwrap_err();
        assert!(e.to_string().contains(cases[0].1), "{e}");
        let text = minimal().replace(cases[1].0, "listen = \"nowhere\"");
        let e = Config::from_toml(Path::new("x.toml"), &text)
            .unwrap()
            .resolve(Path::new("."))
            .unwrap_err();
        assert!(e.to_string().contains(cases[1].1), "{e}");
        let text = minimal() + "[key_release]\npolicy = \"never\"\n";
        let e = Config::from_toml(Path::new("x.toml"), &text)
            .unwrap()
            .resolve(Path::new("."))
            .unwrap_err();
        assert!(e.to_string().contains("key_release.policy"), "{e}");
    }
}
