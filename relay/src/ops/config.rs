//! The relay's TOML configuration. `configs/relay.toml` documents every setting.
//!
//! Parsing is strict (`deny_unknown_fields`: a misspelt key is an error, not a silent default),
//! and every error names the key and says what to change: toml's own messages carry the line,
//! column and key; [`Config::validate`] adds the cross-field checks.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use photon_protocol::hopauth::{HopKey, HopKeys};
use serde::Deserialize;

use crate::forward::hold::{Forwarding, HoldLimits};
use crate::forward::table::{LocalSpec, PeerKind, PeerSpec};
use crate::socket::{SocketConfig, SocketRelayConfig};

pub use photon_ops::config::{in_range, invalid, ConfigError};
pub use photon_ops::log::{LogFormat, LogSection};
pub use photon_ops::stages::PerfSection;

/// A MAC address written `02:00:00:00:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            format!("invalid MAC address {s:?}: expected six hex bytes like \"02:00:00:00:00:01\"")
        };
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 128-bit hop key written as 32 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Key16(pub [u8; 16]);

impl std::fmt::Debug for Key16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key16(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Key16 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key16, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "invalid hop key: expected 32 hex digits, got {} characters",
                s.len()
            ))
        };
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Key16(k))
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub relay: RelayConfig,
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    #[serde(default)]
    pub eal: EalConfig,
    /// `[[port]]` tables, in port-index order.
    #[serde(rename = "port")]
    pub ports: Vec<PortConfig>,
    /// `[[neighbour]]` tables: static IP → MAC entries.
    #[serde(default, rename = "neighbour")]
    pub neighbours: Vec<Neighbour>,
    /// `[[peer]]` tables: peer relays of the mesh.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerRelay>,
    /// `[control]`: registration, keepalives, short IDs, repair cache ([`crate::control`]).
    #[serde(default)]
    pub control: crate::control::ControlConfig,
    /// `[roster]`: the deployment's signed membership roster (optional; `photon_ops::roster`):
    /// the allow list and this relay's short-ID range default from it.
    #[serde(default)]
    pub roster: photon_ops::roster::RosterSection,
    /// `[socket]`: the kernel-socket backend ([`crate::socket`]).
    #[serde(default)]
    pub socket: SocketConfig,
    /// `[metrics]`: the Prometheus endpoint ([`crate::ops::metrics`]).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[log]`: log format and filter ([`crate::ops::metrics`]).
    #[serde(default)]
    pub log: LogSection,
    /// `[perf]`: stage records for the propagation report ([`crate::ops::stages`]).
    #[serde(default)]
    pub perf: PerfSection,
}

/// `[relay]`: who the relay is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    pub node_id: u32,
    pub ip: Ipv4Addr,
    #[serde(default = "default_prefix")]
    pub prefix_len: u8,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    pub udp_port: u16,
    pub cores: Vec<usize>,
    #[serde(default)]
    pub main_core: usize,
    #[serde(default = "default_max_hops")]
    pub max_hops: u8,
    /// `"cut-through"` (default) or `"store-and-forward"` (a baseline: [`crate::forward::hold`]).
    #[serde(default)]
    pub forwarding: Forwarding,
    /// Store-and-forward only: streams held at once.
    #[serde(default = "default_hold_max_streams")]
    pub hold_max_streams: usize,
    /// Store-and-forward only: bytes held at once (per pipeline core on DPDK, where each held
    /// fragment counts as its whole RX buffer).
    #[serde(default = "default_hold_max_bytes")]
    pub hold_max_bytes: usize,
    /// Store-and-forward only: a stream is released incomplete this long after its first
    /// fragment.
    #[serde(default = "default_hold_timeout_ms")]
    pub hold_timeout_ms: u64,
}

impl RelayConfig {
    /// The holder's bounds with the timeout in ms.
    pub fn hold_limits(&self) -> HoldLimits {
        HoldLimits {
            max_streams: self.hold_max_streams,
            max_bytes: self.hold_max_bytes,
            timeout: self.hold_timeout_ms,
        }
    }
}

fn default_hold_max_streams() -> usize {
    64
}
fn default_hold_max_bytes() -> usize {
    16 << 20
}
fn default_hold_timeout_ms() -> u64 {
    1000
}

fn default_prefix() -> u8 {
    24
}
fn default_max_hops() -> u8 {
    8
}

/// `[dataplane]`: sizes and timers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    pub drain_us: u64,
    pub dedup_entries: usize,
    pub rx_mbufs: u32,
    pub header_mbufs: u32,
    pub mbuf_cache: u32,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub control_ring: u32,
    /// DPDK backend: forwarded fragments the control core's repair cache may hold as mbuf
    /// references (each one RX-pool and one header-pool mbuf; both pools are created this
    /// much larger). Caps `control.repair_cache_fragments` on this backend; 0: no repair cache
    /// (repair requests are then all missed).
    pub repair_mbufs: u32,
    /// After [`crate::dpdk::pipeline::IDLE_POLLS`] empty RX polls in a row, a pipeline core sleeps
    /// this many µs after each further empty poll (l3fwd-power); 0: pure busy-polling.
    pub idle_sleep_us: u64,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            drain_us: 100,
            dedup_entries: 1 << 20,
            rx_mbufs: 16383,
            header_mbufs: 32767,
            mbuf_cache: 256,
            rx_desc: 1024,
            tx_desc: 1024,
            control_ring: 1024,
            repair_mbufs: 8192,
            idle_sleep_us: 0,
        }
    }
}

/// `[eal]`: how DPDK starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    pub file_prefix: String,
    pub no_huge: bool,
    pub memory_mb: Option<u32>,
    pub args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            file_prefix: "photon-relay".into(),
            no_huge: false,
            memory_mb: None,
            args: Vec::new(),
        }
    }
}

/// `[[port]]`: one ethdev.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The device name DPDK knows it by (`net_tap0`, `0000:01:00.0`).
    pub name: String,
    /// Create this virtual device: `--vdev` arguments (`net_tap0,iface=photon0`).
    #[serde(default)]
    pub vdev: Option<String>,
    /// Use this PCI device (bound to vfio-pci): passed as `-a`.
    #[serde(default)]
    pub pci: Option<String>,
}

/// `[[neighbour]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A configured peer relay whose next hop has no static `[[neighbour]]` entry.
#[derive(Debug, Clone)]
pub struct UnresolvedPeer {
    /// Its entry, `next_hop_mac` zero until resolved.
    pub spec: PeerSpec,
    /// The next hop to resolve by ARP (`None`: off-link without `relay.gateway`).
    pub next_hop: Option<Ipv4Addr>,
}

/// `[[peer]]`: a peer relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRelay {
    pub node_id: u32,
    pub addr: SocketAddrV4,
    #[serde(default)]
    pub port: u16,
    #[serde(default = "yes")]
    pub subscribed: bool,
    /// Static hop keys for testbeds without the handshake (§4.2): relay → peer.
    #[serde(default)]
    pub send_key: Option<Key16>,
    /// Peer → relay.
    #[serde(default)]
    pub recv_key: Option<Key16>,
}

fn yes() -> bool {
    true
}

impl Config {
    /// Parses and validates a configuration.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = photon_ops::config::parse(text, None)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a configuration file; a relative `perf.stage_log` is made
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = photon_ops::config::read(path)?;
        let mut cfg = Config::from_toml(&text)?;
        if let Some(p) = &mut cfg.perf.stage_log {
            if p.is_relative() {
                *p = path.parent().unwrap_or(Path::new(".")).join(&*p);
            }
        }
        if let Some(p) = &mut cfg.roster.file {
            if p.is_relative() {
                *p = path.parent().unwrap_or(Path::new(".")).join(&*p);
            }
        }
        Ok(cfg)
    }

    /// The stage-record file (`perf.stage_log`, made relative to the configuration file's
    /// folder by [`Config::load`]) and the node name (default "relay"), when records are asked
    /// for.
    pub fn stage_log(&self) -> Option<(PathBuf, String)> {
        self.perf.stage_log(Path::new(""), "relay")
    }

    /// Cross-field checks; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.control.validate()?;
        self.socket.validate()?;
        self.log.validate()?;
        self.perf.validate()?;
        if self
            .perf
            .stage_log
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "perf.stage_log",
                "an empty path; remove the key for no records",
            ));
        }
        let r = &self.relay;
        if r.node_id == 0 {
            return Err(invalid(
                "relay.node_id",
                "0 is reserved for unregistered senders; pick another id",
            ));
        }
        if r.udp_port == 0 {
            return Err(invalid("relay.udp_port", "must not be 0"));
        }
        if r.prefix_len > 32 {
            return Err(invalid(
                "relay.prefix_len",
                format!("{} is not an IPv4 prefix length (0..=32)", r.prefix_len),
            ));
        }
        if let Some(gw) = r.gateway {
            if !self.on_link(gw) {
                return Err(invalid(
                    "relay.gateway",
                    format!("{gw} is not in {}/{}", r.ip, r.prefix_len),
                ));
            }
        }
        if r.cores.is_empty() {
            return Err(invalid(
                "relay.cores",
                "list at least one core for a pipeline",
            ));
        }
        for (i, c) in r.cores.iter().enumerate() {
            if r.cores[..i].contains(c) {
                return Err(invalid("relay.cores", format!("core {c} is listed twice")));
            }
            if *c == r.main_core {
                return Err(invalid(
                    "relay.cores",
                    format!("core {c} is also relay.main_core; give pipelines their own cores"),
                ));
            }
        }
        if r.max_hops == 0 {
            return Err(invalid("relay.max_hops", "0 would forward nothing"));
        }
        in_range(
            "relay.hold_max_streams",
            r.hold_max_streams,
            1..=1 << 16,
            "",
        )?;
        let bytes = 1 << 16..=1 << 32;
        in_range(
            "relay.hold_max_bytes",
            r.hold_max_bytes,
            bytes,
            " (64 KiB to 4 GiB)",
        )?;
        in_range("relay.hold_timeout_ms", r.hold_timeout_ms, 1..=60_000, "")?;
        let d = &self.dataplane;
        if d.drain_us == 0 {
            return Err(invalid("dataplane.drain_us", "must be at least 1"));
        }
        in_range(
            "dataplane.idle_sleep_us",
            d.idle_sleep_us,
            0..=100_000,
            " (0: busy-poll)",
        )?;
        if d.dedup_entries == 0 {
            return Err(invalid("dataplane.dedup_entries", "must be at least 1"));
        }
        if !d.control_ring.is_power_of_two() || d.control_ring < 2 {
            return Err(invalid(
                "dataplane.control_ring",
                format!("{} is not a power of two >= 2", d.control_ring),
            ));
        }
        if d.rx_mbufs == 0 || d.header_mbufs == 0 || d.rx_desc == 0 || d.tx_desc == 0 {
            return Err(invalid(
                "dataplane",
                "pool sizes and descriptor counts must be positive",
            ));
        }
        if self.ports.is_empty() {
            return Err(invalid("port", "configure at least one [[port]]"));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if self.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(invalid(
                    format!("port[{i}].name"),
                    format!("{:?} is listed twice", p.name),
                ));
            }
            if p.vdev.is_some() && p.pci.is_some() {
                return Err(invalid(
                    format!("port[{i}]"),
                    "set either vdev or pci, not both",
                ));
            }
        }
        for (i, n) in self.neighbours.iter().enumerate() {
            if self.neighbours[..i].iter().any(|m| m.ip == n.ip) {
                return Err(invalid(
                    format!("neighbour[{i}].ip"),
                    format!("{} is listed twice", n.ip),
                ));
            }
        }
        for (i, p) in self.peers.iter().enumerate() {
            let key = |k: &str| format!("peer[{i}].{k}");
            if p.node_id == 0 || p.node_id == r.node_id {
                return Err(invalid(
                    key("node_id"),
                    format!("{} is reserved or the relay's own id", p.node_id),
                ));
            }
            if self.peers[..i].iter().any(|q| q.node_id == p.node_id) {
                return Err(invalid(
                    key("node_id"),
                    format!("{} is listed twice", p.node_id),
                ));
            }
            if usize::from(p.port) >= self.ports.len() {
                return Err(invalid(
                    key("port"),
                    format!(
                        "port index {} but only {} [[port]] configured",
                        p.port,
                        self.ports.len()
                    ),
                ));
            }
            if p.send_key.is_some() != p.recv_key.is_some() {
                return Err(invalid(
                    key("send_key"),
                    "give both send_key and recv_key, or neither (handshake)",
                ));
            }
        }
        Ok(())
    }

    fn on_link(&self, ip: Ipv4Addr) -> bool {
        let bits = u32::from(self.relay.prefix_len);
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        u32::from(ip) & mask == u32::from(self.relay.ip) & mask
    }

    /// The next hop towards `ip`: itself when on-link, else `relay.gateway`.
    pub fn next_hop(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.on_link(ip) {
            Some(ip)
        } else {
            self.relay.gateway
        }
    }

    /// The static neighbour entry's MAC for the next hop towards `ip`.
    pub fn next_hop_mac(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        let hop = self.next_hop(ip)?;
        self.neighbours
            .iter()
            .find(|n| n.ip == hop)
            .map(|n| n.mac.0)
    }

    /// The relay's identity, given the MAC of each port (known once the ports started).
    pub fn local_spec(&self, port_macs: Vec<[u8; 6]>) -> LocalSpec {
        LocalSpec {
            node_id: self.relay.node_id,
            ip: self.relay.ip,
            udp_port: self.relay.udp_port,
            port_macs,
            max_hops: self.relay.max_hops,
        }
    }

    /// The static `[[neighbour]]` entries as (IP, MAC).
    pub fn static_neighbours(&self) -> Vec<(Ipv4Addr, [u8; 6])> {
        self.neighbours.iter().map(|n| (n.ip, n.mac.0)).collect()
    }

    /// The configured peer relays whose next hop resolves from the static neighbours, and
    /// those that do not (the DPDK control path resolves them by ARP: [`crate::control::arp`]),
    /// with their next hop (`None`: off-link and no `relay.gateway`, unreachable).
    pub fn peer_specs(&self) -> (Vec<PeerSpec>, Vec<UnresolvedPeer>) {
        let mut specs = Vec::new();
        let mut unresolved = Vec::new();
        for p in &self.peers {
            let keys = match (&p.send_key, &p.recv_key) {
                (Some(s), Some(r)) => Some(HopKeys {
                    send: HopKey::from_bytes(&s.0),
                    recv: HopKey::from_bytes(&r.0),
                }),
                _ => None,
            };
            let spec = PeerSpec {
                node_id: p.node_id,
                kind: PeerKind::Relay,
                addr: p.addr,
                next_hop_mac: [0; 6],
                port: p.port,
                keys,
                subscribed: p.subscribed,
            };
            match self.next_hop_mac(*p.addr.ip()) {
                Some(mac) => specs.push(PeerSpec {
                    next_hop_mac: mac,
                    ..spec
                }),
                None => unresolved.push(UnresolvedPeer {
                    next_hop: self.next_hop(*p.addr.ip()),
                    spec,
                }),
            }
        }
        (specs, unresolved)
    }

    /// The EAL command line: main lcore, file prefix, memory, devices, extra arguments.
    pub fn eal_args(&self) -> Vec<String> {
        let mut a = vec![
            "photon-relay".to_string(),
            "-l".into(),
            self.relay.main_core.to_string(),
        ];
        a.extend(["--file-prefix".into(), self.eal.file_prefix.clone()]);
        if self.eal.no_huge {
            a.push("--no-huge".into());
        }
        if let Some(m) = self.eal.memory_mb {
            a.extend(["-m".into(), m.to_string()]);
        }
        if self.ports.iter().all(|p| p.pci.is_none()) {
            a.push("--no-pci".into());
        }
        for p in &self.ports {
            if let Some(v) = &p.vdev {
                a.extend(["--vdev".into(), v.clone()]);
            }
            if let Some(pci) = &p.pci {
                a.extend(["-a".into(), pci.clone()]);
            }
        }
        a.extend(self.eal.args.iter().cloned());
        a
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Management address to listen on (keep it off the data network).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

impl Config {
    /// `[control]` resolved with the roster of `[roster]` (read and verified now, against
    /// the wall clock), if one is configured.
    pub fn control_settings(&self) -> Result<crate::control::ControlSettings, ConfigError> {
        let roster = self
            .roster
            .load(Path::new("."), photon_ops::roster::unix_now_s())?
            .map(std::sync::Arc::new);
        self.control.settings_with_roster(roster)
    }

    /// The socket backend's settings from this configuration (`[relay]`, `[dataplane].dedup_entries`,
    /// `[[peer]]`, `[control]`, `[socket]`).
    pub fn socket_relay(&self) -> Result<SocketRelayConfig, ConfigError> {
        let cfg = self;
        cfg.socket.validate()?;
        let bind = cfg
            .socket
            .bind
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.relay.udp_port));
        // Peer relays: the socket path needs no MAC; every configured peer is reachable.
        let peers = cfg
            .peers
            .iter()
            .map(|p| PeerSpec {
                node_id: p.node_id,
                kind: crate::forward::table::PeerKind::Relay,
                addr: p.addr,
                next_hop_mac: [0; 6],
                port: 0,
                keys: match (&p.send_key, &p.recv_key) {
                    (Some(s), Some(r)) => Some(photon_protocol::hopauth::HopKeys {
                        send: photon_protocol::hopauth::HopKey::from_bytes(&s.0),
                        recv: photon_protocol::hopauth::HopKey::from_bytes(&r.0),
                    }),
                    _ => None,
                },
                subscribed: p.subscribed,
            })
            .collect();
        let control = cfg.control_settings()?;
        Ok(SocketRelayConfig {
            bind,
            node_id: cfg.relay.node_id,
            max_hops: cfg.relay.max_hops,
            dedup_entries: cfg.dataplane.dedup_entries,
            batch: cfg.socket.batch,
            tick: Duration::from_millis(cfg.socket.tick_ms),
            recv_buffer: cfg.socket.recv_buffer,
            send_buffer: cfg.socket.send_buffer,
            peers,
            forwarding: cfg.relay.forwarding,
            hold: cfg.relay.hold_limits(),
            roster_watch: photon_ops::roster::RosterWatcher::new(
                &cfg.roster,
                Path::new("."),
                control.roster.clone(),
            ),
            control,
            stage_log: cfg.stage_log(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [relay]
        node_id = 1
        ip = "10.0.0.1"
        udp_port = 4433
        cores = [1]
        [[port]]
        name = "net_ring0"
        vdev = "net_ring0"
    "#;

    #[test]
    fn a_roster_file_sets_the_allow_list_and_is_watched() {
        use photon_protocol::identity::Identity;
        use photon_protocol::roster::{Member, MemberRole, Roster};
        let rng = ring::rand::SystemRandom::new();
        let op = Identity::generate(&rng).unwrap();
        let g = Identity::generate(&rng).unwrap().public_key();
        let mut roster = Roster::new(
            3,
            u64::MAX,
            vec![Member {
                key: g,
                role: MemberRole::Gateway,
            }],
        )
        .unwrap();
        roster.sign(&op).unwrap();
        let dir = std::env::temp_dir().join(format!("photon-relay-roster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("d.roster"), roster.emit()).unwrap();
        let text = format!(
            "{MINIMAL}\n[roster]\nfile = \"d.roster\"\noperators = [\"{}\"]\n",
            op.public_key()
        );
        let path = dir.join("relay.toml");
        std::fs::write(&path, &text).unwrap();
        let c = Config::load(&path).unwrap();
        let s = c.control_settings().unwrap();
        assert_eq!(s.allowed_gateways, Some([g.0].into_iter().collect()));
        assert!(s.allow_from_roster);
        assert_eq!(s.roster.as_ref().map(|r| r.serial), Some(3));
        let socket = c.socket_relay().unwrap();
        assert!(socket.roster_watch.is_some());
        // Signed by another key: refused, naming the key to fix.
        let wrong = text.replace(&op.public_key().to_string(), &g.to_string());
        std::fs::write(&path, wrong).unwrap();
        let e = Config::load(&path).unwrap().control_settings().unwrap_err();
        assert!(e.to_string().contains("roster.file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.relay.prefix_len, 24);
        assert_eq!(c.dataplane.drain_us, 100);
        assert_eq!(c.relay.forwarding, Forwarding::CutThrough);
        assert_eq!(c.dataplane.idle_sleep_us, 0);
        let s = Config::from_toml(
            &MINIMAL.replace("[relay]", "[relay]\nforwarding = \"store-and-forward\""),
        )
        .unwrap();
        assert_eq!(s.relay.forwarding, Forwarding::StoreAndForward);
        assert_eq!(s.relay.hold_limits().timeout, 1000);
        assert_eq!(
            c.eal_args(),
            [
                "photon-relay",
                "-l",
                "0",
                "--file-prefix",
                "photon-relay",
                "--no-pci",
                "--vdev",
                "net_ring0"
            ]
        );
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
        for name in [
            "relay.toml",
            "relay-afpacket.toml",
            "relay-tap.toml",
            "relay-nic.toml",
        ] {
            let path = Path::new(dir).join(name);
            let c = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!c.ports.is_empty(), "{name}");
        }
    }

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let e = err(&MINIMAL.replace("udp_port = 4433", "udp_port = 4433\nudp_prot = 1"));
        assert!(e.contains("udp_prot"), "{e}");
        let e = err(&MINIMAL.replace("\"10.0.0.1\"", "\"10.0.0.300\""));
        assert!(e.contains("ip") && e.contains("10.0.0.300"), "{e}");
        let e = err(&MINIMAL.replace("cores = [1]", "cores = [1, 1]"));
        assert!(
            e.contains("relay.cores") && e.contains("core 1 is listed twice"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("cores = [1]", "cores = [0]"));
        assert!(e.contains("main_core"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[neighbour]]\nip = \"10.0.0.2\"\nmac = \"02:00:00:00:00\""
        ));
        assert!(e.contains("MAC") && e.contains("02:00:00:00:00"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[peer]]\nnode_id = 2\naddr = \"10.0.0.2:4433\"\nport = 3"
        ));
        assert!(e.contains("peer[0].port"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[peer]]\nnode_id = 2\naddr = \"10.0.0.2:4433\"\nsend_key = \"00\""
        ));
        assert!(e.contains("hop key"), "{e}");
        let e = err(&MINIMAL.replace("[relay]", "[relay]\nforwarding = \"store-forward\""));
        assert!(
            e.contains("forwarding") && e.contains("store-forward") && e.contains("cut-through"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}\n[dataplane]\nidle_sleep_us = 1000000"));
        assert!(e.contains("dataplane.idle_sleep_us"), "{e}");
        let e = err(&MINIMAL.replace("[relay]", "[relay]\nhold_timeout_ms = 0"));
        assert!(e.contains("relay.hold_timeout_ms"), "{e}");
        let e = err(&MINIMAL.replace("[relay]", "[relay]\ngateway = \"192.168.0.1\""));
        assert!(e.contains("relay.gateway"), "{e}");
    }

    #[test]
    fn perf_stage_log_resolves_beside_the_config() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.stage_log(), None, "absent: no records");
        let text = format!("{MINIMAL}\n[perf]\nstage_log = \"s.jsonl\"\nnode_name = \"relay3\"\n");
        let dir =
            std::env::temp_dir().join(format!("photon-relay-perf-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(&file, &text).unwrap();
        let c = Config::load(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            c.stage_log(),
            Some((dir.join("s.jsonl"), "relay3".to_string()))
        );
        let abs = text.replace("\"s.jsonl\"", "\"/tmp/x.jsonl\"");
        let c = Config::from_toml(&abs).unwrap();
        assert_eq!(c.stage_log().unwrap().0, PathBuf::from("/tmp/x.jsonl"));
        let c = Config::from_toml(&format!("{MINIMAL}\n[perf]\nstage_log = \"s\"\n")).unwrap();
        assert_eq!(c.stage_log().unwrap().1, "relay", "default name");
        let e = err(&text.replace("relay3", "a\\\"b"));
        assert!(e.contains("perf.node_name"), "{e}");
        let e = err(&format!("{MINIMAL}\n[perf]\nstage_logg = \"s\"\n"));
        assert!(e.contains("stage_logg"), "{e}");
    }

    #[test]
    fn next_hops_resolve_on_link_or_via_gateway() {
        let text = format!(
            "{}\n[[neighbour]]\nip = \"10.0.0.2\"\nmac = \"02:00:00:00:00:02\"\n[[neighbour]]\nip = \"10.0.0.254\"\nmac = \"02:00:00:00:00:fe\"\n\
             [[peer]]\nnode_id = 2\naddr = \"10.0.0.2:4433\"\n[[peer]]\nnode_id = 3\naddr = \"192.0.2.7:4433\"\n[[peer]]\nnode_id = 4\naddr = \"10.0.0.9:4433\"",
            MINIMAL.replace("[relay]", "[relay]\ngateway = \"10.0.0.254\"")
        );
        let c = Config::from_toml(&text).unwrap();
        let (specs, unresolved) = c.peer_specs();
        assert_eq!(
            specs
                .iter()
                .map(|s| (s.node_id, s.next_hop_mac[5]))
                .collect::<Vec<_>>(),
            vec![(2, 2), (3, 0xfe)]
        );
        assert_eq!(
            unresolved
                .iter()
                .map(|u| (u.spec.node_id, u.next_hop))
                .collect::<Vec<_>>(),
            vec![(4, Some(Ipv4Addr::new(10, 0, 0, 9)))],
            "on-link without a neighbour entry: resolved by ARP"
        );
        let c = Config::from_toml(&text.replace("gateway = \"10.0.0.254\"", "")).unwrap();
        let (_, unresolved) = c.peer_specs();
        assert_eq!(
            unresolved
                .iter()
                .map(|u| (u.spec.node_id, u.next_hop))
                .collect::<Vec<_>>(),
            vec![(3, None), (4, Some(Ipv4Addr::new(10, 0, 0, 9)))],
            "off-link without relay.gateway: no next hop"
        );
    }
}
