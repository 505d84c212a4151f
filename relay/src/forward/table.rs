//! The forwarding table: who the relay talks to, how to reach them, and who gets fragments.
//!
//! Immutable once built: the control path builds a new [`Table`] whenever a gateway registers,
//! a keepalive shows a NAT rebinding, an ARP reply resolves a next hop or a peer relay's session
//! is established, and publishes it with [`crate::forward::publish::Publisher`]; data cores switch to it
//! between bursts. Everything the data path needs per packet is precomputed here: the sender id
//! → slot index (a sorted array, binary search, no hashing of attacker-chosen keys), each
//! peer's header template with its partial checksums, its hop keys, and the fan-out list.

use std::net::{Ipv4Addr, SocketAddrV4};

use photon_protocol::hopauth::HopKeys;
use photon_protocol::integrity::prefix_of;

use crate::packet::{HeaderTemplate, Local};

/// Most destinations one fragment fans out to (bounds the per-core scratch space, and stays far
/// below the 16-bit mbuf refcount).
pub const MAX_FANOUT: usize = 1024;

/// What kind of node a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// A gateway beside a blockchain node; registered through the control path. It originates
    /// streams under its own prefix only (`streams`: `integrity::stream_prefix` of its key,
    /// §4.1.6), so its fragments of any other stream are dropped (`foreign_stream`).
    Gateway { streams: u32 },
    /// Another relay of the mesh; configured.
    Relay,
}

impl PeerKind {
    pub fn is_gateway(self) -> bool {
        matches!(self, PeerKind::Gateway { .. })
    }

    /// Whether fragments of `stream` may come from this peer: a gateway's own streams, any
    /// stream from a peer relay.
    #[inline]
    pub fn may_send(self, stream: u64) -> bool {
        match self {
            PeerKind::Gateway { streams } => prefix_of(stream) == streams,
            PeerKind::Relay => true,
        }
    }
}

/// One peer as the control path describes it.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// The peer's node id (the `sender` field of what it sends; never 0).
    pub node_id: u32,
    pub kind: PeerKind,
    /// Where to send: the address and port its registration or keepalives came from (so NAT
    /// bindings work), or the configured address of a peer relay.
    pub addr: SocketAddrV4,
    /// Next-hop MAC for `addr` (the peer's, or the router's when it is off-link).
    pub next_hop_mac: [u8; 6],
    /// Index of the relay port (the config's `[[port]]` order) that reaches it.
    pub port: u16,
    /// The link's hop keys (§4.2): `recv` verifies what it sends us, `send` signs what we send
    /// it. `None` until the handshake is done: its fragments are dropped (`no_session`) and it
    /// is not sent any.
    pub keys: Option<HopKeys>,
    /// Whether it receives the fan-out of block fragments.
    pub subscribed: bool,
}

/// The relay's own identity and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSpec {
    /// The relay's node id, written as `sender` in every forwarded fragment.
    pub node_id: u32,
    pub ip: Ipv4Addr,
    pub udp_port: u16,
    /// MAC of each port, by port index.
    pub port_macs: Vec<[u8; 6]>,
    /// Fragments that already crossed this many relays are not forwarded again.
    pub max_hops: u8,
}

impl LocalSpec {
    /// What the classifier of port `port` needs.
    pub fn local(&self, port: usize) -> Local {
        Local {
            mac: self.port_macs.get(port).copied().unwrap_or([0; 6]),
            ip: self.ip,
            udp_port: self.udp_port,
        }
    }
}

/// A peer with its precomputed header template.
#[derive(Debug, Clone)]
pub struct Peer {
    pub spec: PeerSpec,
    pub template: HeaderTemplate,
    /// In the fan-out list (subscribed and has a send key).
    pub fans_out: bool,
}

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("node id 0 is reserved for unregistered senders")]
    ReservedNodeId,
    #[error("node id {0} is listed twice")]
    DuplicateNode(u32),
    #[error("node id {node} is the relay's own id")]
    OwnNodeId { node: u32 },
    #[error("peer {node} uses port {port}, but the relay has {ports} port(s)")]
    NoSuchPort { node: u32, port: u16, ports: usize },
    #[error("{0} subscribers exceed the fan-out limit of {MAX_FANOUT}")]
    TooManySubscribers(usize),
}

/// An immutable forwarding table.
#[derive(Debug, Clone)]
pub struct Table {
    local: LocalSpec,
    peers: Vec<Peer>,
    /// (node id, slot), sorted by node id.
    ids: Vec<(u32, u16)>,
    /// Slots that receive the fan-out.
    fanout: Vec<u16>,
}

impl Table {
    /// Builds a table, checking the peers.
    pub fn new(local: LocalSpec, peers: Vec<PeerSpec>) -> Result<Table, TableError> {
        let mut ids = Vec::with_capacity(peers.len());
        let mut built = Vec::with_capacity(peers.len());
        let mut fanout = Vec::new();
        for (slot, spec) in peers.into_iter().enumerate() {
            if spec.node_id == 0 {
                return Err(TableError::ReservedNodeId);
            }
            if spec.node_id == local.node_id {
                return Err(TableError::OwnNodeId { node: spec.node_id });
            }
            let Some(&mac) = local.port_macs.get(usize::from(spec.port)) else {
                return Err(TableError::NoSuchPort {
                    node: spec.node_id,
                    port: spec.port,
                    ports: local.port_macs.len(),
                });
            };
            let src = SocketAddrV4::new(local.ip, local.udp_port);
            let template = HeaderTemplate::between(mac, src, spec.next_hop_mac, spec.addr);
            let fans_out = spec.subscribed && spec.keys.is_some();
            if fans_out {
                fanout.push(slot as u16);
            }
            ids.push((spec.node_id, slot as u16));
            built.push(Peer {
                spec,
                template,
                fans_out,
            });
        }
        if fanout.len() > MAX_FANOUT {
            return Err(TableError::TooManySubscribers(fanout.len()));
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(TableError::DuplicateNode(w[0].0));
        }
        Ok(Table {
            local,
            peers: built,
            ids,
            fanout,
        })
    }

    /// An empty table (no peers).
    pub fn empty(local: LocalSpec) -> Table {
        Table {
            local,
            peers: Vec::new(),
            ids: Vec::new(),
            fanout: Vec::new(),
        }
    }

    /// The relay's own identity.
    pub fn local(&self) -> &LocalSpec {
        &self.local
    }

    /// The slot of the gateway whose prefix `stream` carries (its origin, §4.1.6), if it is
    /// in the table. A linear scan: for the control path, not per fragment.
    pub fn origin_of(&self, stream: u64) -> Option<usize> {
        self.peers.iter().position(|p| {
            matches!(p.spec.kind, PeerKind::Gateway { streams } if streams == prefix_of(stream))
        })
    }

    /// The slot of a sender id, if known.
    #[inline]
    pub fn slot_of(&self, node_id: u32) -> Option<usize> {
        self.ids
            .binary_search_by_key(&node_id, |&(id, _)| id)
            .ok()
            .map(|i| usize::from(self.ids[i].1))
    }

    /// The peer in `slot`.
    #[inline]
    pub fn peer(&self, slot: usize) -> Option<&Peer> {
        self.peers.get(slot)
    }

    /// All peers, by slot.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Slots that receive the fan-out.
    #[inline]
    pub fn fanout(&self) -> &[u16] {
        &self.fanout
    }

    /// Destinations of a fragment that came from `from`: every fan-out slot but `from`.
    #[inline]
    pub fn destinations(&self, from: usize) -> impl Iterator<Item = (usize, &Peer)> + '_ {
        self.fanout
            .iter()
            .map(|&s| usize::from(s))
            .filter(move |&s| s != from)
            .map(|s| (s, &self.peers[s]))
    }

    /// How many destinations [`Table::destinations`] yields.
    #[inline]
    pub fn destination_count(&self, from: usize) -> usize {
        let own = self.peers.get(from).is_some_and(|p| p.fans_out);
        self.fanout.len() - usize::from(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use photon_protocol::hopauth::HopKey;

    pub(crate) fn keys(n: u8) -> HopKeys {
        HopKeys {
            send: HopKey::from_bytes(&[n; 16]),
            recv: HopKey::from_bytes(&[n ^ 0x80; 16]),
        }
    }

    fn local() -> LocalSpec {
        LocalSpec {
            node_id: 1,
            ip: Ipv4Addr::new(10, 0, 0, 1),
            udp_port: 4433,
            port_macs: vec![[2, 0, 0, 0, 0, 1]],
            max_hops: 8,
        }
    }

    fn peer(id: u32, subscribed: bool, with_keys: bool) -> PeerSpec {
        PeerSpec {
            node_id: id,
            kind: PeerKind::Gateway { streams: 0 },
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, id as u8), 5000),
            next_hop_mac: [2, 0, 0, 0, 0, id as u8],
            port: 0,
            keys: with_keys.then(|| keys(id as u8)),
            subscribed,
        }
    }

    #[test]
    fn lookup_and_fanout_exclude_the_sender() {
        let t = Table::new(
            local(),
            vec![
                peer(30, true, true),
                peer(10, true, true),
                peer(20, false, true),
                peer(40, true, false),
            ],
        )
        .unwrap();
        assert_eq!(t.slot_of(10), Some(1));
        assert_eq!(t.slot_of(30), Some(0));
        assert_eq!(t.slot_of(99), None);
        assert_eq!(
            t.fanout(),
            &[0, 1],
            "unsubscribed and keyless peers get nothing"
        );
        let from_10: Vec<u32> = t.destinations(1).map(|(_, p)| p.spec.node_id).collect();
        assert_eq!(from_10, vec![30]);
        assert_eq!(t.destination_count(1), 1);
        assert_eq!(
            t.destination_count(2),
            2,
            "an unsubscribed sender still reaches everyone"
        );
    }

    #[test]
    fn bad_tables_are_typed_errors() {
        assert_eq!(
            Table::new(local(), vec![peer(0, true, true)]).unwrap_err(),
            TableError::ReservedNodeId
        );
        assert_eq!(
            Table::new(local(), vec![peer(1, true, true)]).unwrap_err(),
            TableError::OwnNodeId { node: 1 }
        );
        assert_eq!(
            Table::new(local(), vec![peer(5, true, true), peer(5, true, true)]).unwrap_err(),
            TableError::DuplicateNode(5)
        );
        let mut p = peer(5, true, true);
        p.port = 3;
        assert_eq!(
            Table::new(local(), vec![p]).unwrap_err(),
            TableError::NoSuchPort {
                node: 5,
                port: 3,
                ports: 1
            }
        );
        let many = (2..2 + MAX_FANOUT as u32 + 1)
            .map(|i| peer(i, true, true))
            .collect();
        assert!(matches!(
            Table::new(local(), many),
            Err(TableError::TooManySubscribers(_))
        ));
    }
}
