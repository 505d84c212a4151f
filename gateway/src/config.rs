//! The gateway's TOML configuration. `configs/gateway.toml` documents every setting.
//!
//! Unknown keys are errors (`deny_unknown_fields`), and every error names the key or the file
//! so the operator knows what to change. Choices are serde enums, so a misspelt one fails at
//! parse time with the accepted values; the defaults of settings the core has come from
//! [`CoreConfig::new`] (one source), converted to the file's units.

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
use crate::node::NodeConfig;

/// `node.network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    #[serde(alias = "mainnet")]
    Bitcoin,
    Testnet,
    Signet,
    Regtest,
}

impl From<NetworkName> for bitcoin::Network {
    fn from(n: NetworkName) -> Self {
        match n {
            NetworkName::Bitcoin => bitcoin::Network::Bitcoin,
            NetworkName::Testnet => bitcoin::Network::Testnet,
            NetworkName::Signet => bitcoin::Network::Signet,
            NetworkName::Regtest => bitcoin::Network::Regtest,
        }
    }
}

/// `key_release.policy`: which [`KeyReleasePolicy`] the section describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyReleaseKind {
    Receipts,
    Immediate,
}

/// `log.format`.
pub use photon_ops::log::{LogFormat, LogSection};
pub use photon_ops::stages::PerfSection;

/// `block.encoding`: compact | bip152 | full ([`BlockEncoding::from_name`]).
fn deserialize_encoding<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BlockEncoding, D::Error> {
    let name = String::deserialize(d)?;
    BlockEncoding::from_name(&name).ok_or_else(|| {
        serde::de::Error::custom(format!("`{name}`: expected compact, bip152 or full"))
    })
}

pub use photon_ops::config::{invalid, ConfigError};

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
    /// The deployment's signed membership roster (optional): trusted origins, the receipt
    /// signers and the receiver count default from it (`photon_ops::roster`).
    #[serde(default)]
    pub roster: photon_ops::roster::RosterSection,
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
    pub network: NetworkName,
    #[serde(default = "default_delivery")]
    pub delivery: Delivery,
    /// MiB of blocks from the network kept to serve the node (a node that fell behind or
    /// restarted catches up from them).
    #[serde(default = "default_block_store_mb")]
    pub block_store_mb: u64,
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
    #[serde(default = "default_originate_via_peers")]
    pub originate_via_peers: bool,
    #[serde(default)]
    pub trusted_origins: Vec<String>,
    #[serde(default = "default_batch")]
    pub recv_batch: usize,
    #[serde(default = "default_recv_buffer")]
    pub recv_buffer_kb: usize,
    /// Per destination: KiB of transactions (and tx answers) queued at most, and KiB of
    /// control messages; more is dropped and counted (F7).
    #[serde(default = "default_paced_queue")]
    pub paced_queue_kb: usize,
    #[serde(default = "default_control_queue")]
    pub control_queue_kb: usize,
    /// A tx request for an ID answered on the same direct peer link within this long is not
    /// answered again.
    #[serde(default = "default_tx_answer_repeat")]
    pub tx_answer_repeat_ms: u64,
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
#[serde(deny_unknown_fields, default)]
pub struct KeyReleaseSection {
    pub policy: KeyReleaseKind,
    /// With `receipts`: share of `receivers` whose receipts release the key, and the timeout.
    pub share: f64,
    /// Default: the roster's gateways minus one, else the core's default (1).
    pub receivers: Option<u32>,
    pub timeout_ms: u64,
}

impl Default for KeyReleaseSection {
    fn default() -> Self {
        match CoreConfig::new().key_release {
            KeyReleasePolicy::Receipts { share, timeout, .. } => KeyReleaseSection {
                policy: KeyReleaseKind::Receipts,
                share,
                // Resolved later: from the roster, else the core's default.
                receivers: None,
                timeout_ms: ms(timeout),
            },
            // Not the core's default; the receipt settings are then unused.
            KeyReleasePolicy::Immediate => KeyReleaseSection {
                policy: KeyReleaseKind::Immediate,
                share: 0.0,
                receivers: Some(0),
                timeout_ms: 0,
            },
        }
    }
}

/// How our blocks go out (docs/protocol.md §6.8, §6.9): baselines for the perf runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockSection {
    #[serde(deserialize_with = "deserialize_encoding")]
    pub encoding: BlockEncoding,
    pub encrypt: bool,
}

impl Default for BlockSection {
    fn default() -> Self {
        let core = CoreConfig::new();
        BlockSection {
            encoding: core.block_encoding,
            encrypt: core.encrypt,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TxStoreSection {
    pub max_mb: u64,
    pub ttl_s: u64,
}

impl Default for TxStoreSection {
    fn default() -> Self {
        let store = CoreConfig::new().tx_store;
        TxStoreSection {
            max_mb: (store.max_bytes >> 20) as u64,
            ttl_s: store.ttl.as_secs(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// host:port for the Prometheus endpoint; absent: no endpoint.
    pub listen: Option<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
fn default_network() -> NetworkName {
    NetworkName::Bitcoin
}
fn default_delivery() -> Delivery {
    CoreConfig::new().delivery
}

fn default_block_store_mb() -> u64 {
    (NodeConfig::new(bitcoin::Network::Bitcoin).block_store_bytes >> 20) as u64
}
fn default_uplink() -> f64 {
    CoreConfig::new().uplink_bytes_per_sec as f64 * 8.0 / 1e6
}
fn default_repair() -> f64 {
    f64::from(CoreConfig::new().repair.overhead_permille) / 10.0
}
fn default_keepalive() -> u64 {
    ms(CoreConfig::new().keepalive)
}
fn default_quiet() -> u64 {
    ms(CoreConfig::new().link_quiet)
}
fn default_register_retry() -> u64 {
    ms(CoreConfig::new().register_retry)
}
fn default_fallback() -> u64 {
    ms(CoreConfig::new().peer_fallback)
}
fn default_originate_via_peers() -> bool {
    CoreConfig::new().originate_via_peers
}
// Socket and logging settings: not the core's, so their defaults live here only.
fn default_batch() -> usize {
    32
}
fn default_recv_buffer() -> usize {
    8192
}
fn default_paced_queue() -> usize {
    CoreConfig::new().paced_queue_bytes / 1024
}
fn default_control_queue() -> usize {
    CoreConfig::new().control_queue_bytes / 1024
}
fn default_tx_answer_repeat() -> u64 {
    ms(CoreConfig::new().tx_answer_repeat)
}

/// The public key (64 hex digits, [`PublicKey`]'s `FromStr`) set by config key `key`.
pub fn parse_public_key(key: &str, s: &str) -> Result<PublicKey, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, "expected 64 hex digits (an Ed25519 public key)"))
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
    /// The node side's settings (network, block store).
    pub node: NodeConfig,
    pub listen: SocketAddr,
    pub recv_batch: usize,
    /// Socket receive buffer, bytes.
    pub recv_buffer: usize,
    pub core: CoreConfig,
    pub metrics_listen: Option<SocketAddr>,
    pub log: LogSection,
    /// Where stage records go, and the node name they carry.
    pub stage_log: Option<(PathBuf, String)>,
    /// Watches `[roster] file` for a newer roster while running.
    pub roster_watch: Option<photon_ops::roster::RosterWatcher>,
}

impl Config {
    /// Parses `text`, read from `path` (errors name the file and the `section.key`).
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        photon_ops::config::parse(text, Some(path))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        photon_ops::config::load(path)
    }

    /// Checks every value; relative paths are taken from `base` (the config file's folder).
    pub fn resolve(&self, base: &Path) -> Result<Resolved, ConfigError> {
        let network = bitcoin::Network::from(self.node.network);
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
        if n.recv_batch == 0 || n.recv_batch > photon_udp::MAX_BATCH {
            return Err(invalid(
                "network.recv_batch",
                format!("must be within 1..={}", photon_udp::MAX_BATCH),
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
        let roster = self
            .roster
            .load(base, photon_ops::roster::unix_now_s())?
            .map(std::sync::Arc::new);
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
        if n.paced_queue_kb == 0 || n.control_queue_kb == 0 {
            return Err(invalid(
                "network.paced_queue_kb",
                "paced_queue_kb and control_queue_kb must be at least 1",
            ));
        }
        core.paced_queue_bytes = n.paced_queue_kb.saturating_mul(1024);
        core.control_queue_bytes = n.control_queue_kb.saturating_mul(1024);
        core.tx_answer_repeat = Duration::from_millis(n.tx_answer_repeat_ms);
        if n.originate_via_peers && core.peers.is_empty() {
            return Err(invalid(
                "network.originate_via_peers",
                "is true but no [[peers]] are configured",
            ));
        }
        core.delivery = self.node.delivery;
        let k = &self.key_release;
        core.key_release = match k.policy {
            KeyReleaseKind::Immediate => KeyReleasePolicy::Immediate,
            KeyReleaseKind::Receipts => {
                if !(0.0..=1.0).contains(&k.share) {
                    return Err(invalid("key_release.share", "must be within 0.0..=1.0"));
                }
                let default_receivers = match (&roster, CoreConfig::new().key_release) {
                    (Some(r), _) => (r.gateways().count() as u32).saturating_sub(1),
                    (None, KeyReleasePolicy::Receipts { receivers, .. }) => receivers,
                    (None, KeyReleasePolicy::Immediate) => 0,
                };
                KeyReleasePolicy::Receipts {
                    share: k.share,
                    receivers: k.receivers.unwrap_or(default_receivers),
                    timeout: Duration::from_millis(k.timeout_ms),
                }
            }
        };
        core.block_encoding = self.block.encoding;
        core.encrypt = self.block.encrypt;
        if let Some(r) = &roster {
            for (i, relay) in core.relays.iter().enumerate() {
                if !r.is_relay(&relay.public_key) {
                    return Err(invalid(
                        format!("relays[{i}].public_key"),
                        "is not a relay of the roster (roster.file): add it to the roster",
                    ));
                }
            }
        }
        let roster_watch =
            photon_ops::roster::RosterWatcher::new(&self.roster, base, roster.clone());
        core.roster = roster;
        core.network = network;
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
        let stage_log = self.perf.stage_log(base, "gateway");
        self.perf.validate()?;
        core.stage_records = stage_log.is_some();
        Ok(Resolved {
            key_file: base.join(&self.identity.key_file),
            node_addr: parse_addr("node.address", &self.node.address)?,
            network,
            node: {
                let mut node = NodeConfig::new(network);
                node.block_store_bytes =
                    usize::try_from(self.node.block_store_mb.saturating_mul(1 << 20))
                        .unwrap_or(usize::MAX);
                node
            },
            listen: parse_addr("network.listen", &n.listen)?,
            recv_batch: n.recv_batch,
            recv_buffer: n.recv_buffer_kb.saturating_mul(1024),
            core,
            metrics_listen,
            log: self.log.clone(),
            stage_log,
            roster_watch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("x.toml"), text)
    }

    /// `text` parsed (which must succeed) and resolved against the folder `base`.
    fn resolved(text: &str, base: &str) -> Result<Resolved, ConfigError> {
        parse(text).unwrap().resolve(Path::new(base))
    }

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
        let c = parse(&text).unwrap();
        let r = c.resolve(Path::new("/etc/photon")).unwrap();
        assert_eq!(
            r.stage_log,
            Some((PathBuf::from("/etc/photon/s.jsonl"), "gw3".into()))
        );
        assert!(r.core.stage_records);
        let r = resolved(&minimal(), "/").unwrap();
        assert_eq!(r.stage_log, None);
        assert!(!r.core.stage_records);
        let bad = format!(
            "{}[perf]\nstage_log = \"s\"\nnode_name = \"a\\\"b\"\n",
            minimal()
        );
        let e = resolved(&bad, "/").unwrap_err();
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
    fn a_roster_gives_trusted_origins_receivers_and_checks_relays() {
        use photon_protocol::identity::Identity;
        use photon_protocol::roster::{Member, MemberRole, Roster};
        use photon_protocol::shortid::ShortIdRange;
        let rng = ring::rand::SystemRandom::new();
        let op = Identity::generate(&rng).unwrap();
        let gws: Vec<PublicKey> = (0..5)
            .map(|_| Identity::generate(&rng).unwrap().public_key())
            .collect();
        let mut members: Vec<Member> = gws
            .iter()
            .map(|&key| Member {
                key,
                role: MemberRole::Gateway,
            })
            .collect();
        members.push(Member {
            key: KEY.parse().unwrap(),
            role: MemberRole::Relay {
                short_ids: ShortIdRange::new(0, 1 << 20).unwrap(),
            },
        });
        let mut roster = Roster::new(4, u64::MAX, members).unwrap();
        roster.sign(&op).unwrap();
        let dir = std::env::temp_dir().join(format!("photon-gw-roster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("d.roster"), roster.emit()).unwrap();
        let text = format!(
            "{}[roster]\nfile = \"d.roster\"\noperators = [\"{}\"]\n",
            minimal(),
            op.public_key()
        );
        let r = Config::from_toml(Path::new("x.toml"), &text)
            .unwrap()
            .resolve(&dir)
            .unwrap();
        // No list in the config: the core trusts the roster's gateways (Gateway::new).
        assert!(r.core.trusted_origins.is_empty());
        assert_eq!(
            r.core
                .roster
                .as_ref()
                .unwrap()
                .gateways()
                .collect::<Vec<_>>(),
            gws
        );
        // Five gateways: four receivers, half of them release the key.
        assert_eq!(r.core.key_release.receipts_needed(), 2);
        assert_eq!(r.core.roster.as_deref(), Some(&roster));
        // A relay the roster does not list is a config error naming the key.
        let other = text.replace(KEY, &"02".repeat(32));
        let e = Config::from_toml(Path::new("x.toml"), &other)
            .unwrap()
            .resolve(&dir)
            .unwrap_err();
        assert!(e.to_string().contains("relays[0].public_key"), "{e}");
        // A roster signed by someone else is refused.
        let wrong = text.replace(&op.public_key().to_string(), &gws[0].to_string());
        let e = Config::from_toml(Path::new("x.toml"), &wrong)
            .unwrap()
            .resolve(&dir)
            .unwrap_err();
        assert!(e.to_string().contains("roster.file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&minimal()).unwrap();
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
            let r = resolved(&text, "/").unwrap();
            assert_eq!(r.core.block_encoding, want);
            assert!(!r.core.encrypt);
        }
        // A misspelt choice fails at parse time, naming the key and what it accepts.
        let text = format!("{}[block]\nencoding = \"bip-152\"\n", minimal());
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("block.encoding"), "{e}");
        assert!(e.to_string().contains("compact, bip152 or full"), "{e}");
        let text = format!("{}[block]\nencrypt = \"no\"\n", minimal());
        assert!(parse(&text).is_err());
    }

    #[test]
    fn unknown_key_is_named() {
        let text = minimal().replace("[node]\n", "[node]\nadress = \"x\"\n");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("adress"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("public_key = \"01", "relays[0].public_key"),
            ("listen = \"127.0.0.1:9000\"", "network.listen"),
        ];
        let text = minimal().replace(cases[0].0, "public_key = \"zz");
        let e = resolved(&text, ".").unwrap_err();
        assert!(e.to_string().contains(cases[0].1), "{e}");
        let text = minimal().replace(cases[1].0, "listen = \"nowhere\"");
        let e = resolved(&text, ".").unwrap_err();
        assert!(e.to_string().contains(cases[1].1), "{e}");
        let text = minimal() + "[key_release]\npolicy = \"never\"\n";
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("key_release.policy"), "{e}");
        let text = minimal().replace("[node]\n", "[node]\ndelivery = \"shout\"\n");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("node.delivery"), "{e}");
        let text = minimal() + "[log]\nformat = \"xml\"\n";
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("log.format"), "{e}");
    }

    #[test]
    fn choices_are_enums() {
        let text = minimal().replace(
            "[node]\n",
            "[node]\nnetwork = \"mainnet\"\ndelivery = \"compact\"\n",
        ) + "[key_release]\npolicy = \"immediate\"\n[log]\nformat = \"json\"\n";
        let c = parse(&text).unwrap();
        assert_eq!(c.node.network, NetworkName::Bitcoin);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.format, LogFormat::Json);
        let r = c.resolve(Path::new("/")).unwrap();
        assert_eq!(r.network, bitcoin::Network::Bitcoin);
        assert_eq!(r.core.delivery, Delivery::Compact);
        assert_eq!(r.core.key_release, KeyReleasePolicy::Immediate);
    }

    /// The file's defaults are the core's: one source.
    #[test]
    fn defaults_are_the_cores() {
        let r = resolved(&minimal(), "/").unwrap();
        let core = CoreConfig::new();
        // One `assert_eq!` per field, naming it.
        macro_rules! same_fields {
            ($($field:ident),*) => {
                $(assert_eq!(r.core.$field, core.$field, stringify!($field));)*
            };
        }
        same_fields!(uplink_bytes_per_sec, repair, key_release, keepalive);
        same_fields!(
            link_quiet,
            register_retry,
            peer_fallback,
            originate_via_peers
        );
        same_fields!(delivery, block_encoding, encrypt, tx_store);
    }
}
