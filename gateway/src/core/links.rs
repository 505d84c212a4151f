//! Links to relays and peer gateways, as one owned state machine ([`Links`]): registration
//! (§2.8, §2.9, §5.4), hop keys (§4.2), keepalive (§2.10), quiet detection and relay failover.
//!
//! Contract: the gateway feeds it registrations, register acks, keepalives and "heard from"
//! (every datagram whose hop tag verified, [`Links::verify`]) and calls
//! [`Links::handle_timeout`]; it drains [`Links::poll_transmit`] and [`Links::poll_event`]
//! after each call. Other parts send through [`Links::sign`] (a hop-signed datagram for a
//! link with a session).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Index;
use std::time::{Duration, Instant};

use photon_protocol::hopauth::{HandshakeContext, HopKeys, Role};
use photon_protocol::identity::{self, EphemeralKey, Identity, PublicKey};
use photon_protocol::wire::{
    register_status, KeepaliveRepr, Message, Packet, RegisterRepr, Repr, MAX_DATAGRAM,
};
use ring::rand::{SecureRandom, SystemRandom};

use super::stats::LinkStats;
use super::{CoreConfig, GatewayEvent, LinkId};

/// What a link leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// Relay number `.0` of the config.
    Relay(usize),
    /// Peer gateway number `.0` of the config.
    Peer(usize),
}

/// A link's state as reported by [`Gateway::links`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No session yet (registering, or waiting for the peer to register).
    Connecting,
    /// Session up and heard from recently.
    Up,
    /// Session keys held but the far end went quiet.
    Quiet,
}

/// Node ids on a direct gateway link: the responder names itself 1 and the initiator 2.
const PEER_RESPONDER_ID: u32 = 1;
const PEER_INITIATOR_ID: u32 = 2;
/// Timestamp window for peer registrations (§2.8).
const REGISTER_WINDOW_MS: u64 = 30_000;
/// Registration nonces remembered per peer link, to refuse replays within the window.
const NONCES_KEPT: usize = 64;

pub(super) struct Session {
    pub(super) keys: HopKeys,
    pub(super) our_id: u32,
    pub(super) their_id: u32,
}

struct PendingRegister {
    ephemeral: EphemeralKey,
    request: RegisterRepr,
}

pub(super) struct Link {
    pub(super) kind: LinkKind,
    pub(super) addr: SocketAddr,
    pub(super) remote_key: PublicKey,
    /// We send the registration (relays always; peers when our key is the smaller).
    initiator: bool,
    pub(super) session: Option<Session>,
    pending: Option<PendingRegister>,
    next_register: Option<Instant>,
    last_heard: Option<Instant>,
    up: bool,
    keepalive_every: Duration,
    next_keepalive: Option<Instant>,
    quiet_after: Duration,
    seq: u32,
    echo: u32,
    nonces: VecDeque<[u8; 16]>,
}

impl Link {
    pub(super) fn new(
        kind: LinkKind,
        addr: SocketAddr,
        remote_key: PublicKey,
        initiator: bool,
        now: Instant,
        config: &CoreConfig,
    ) -> Link {
        Link {
            kind,
            addr,
            remote_key,
            initiator,
            session: None,
            pending: None,
            next_register: initiator.then_some(now),
            last_heard: None,
            up: false,
            keepalive_every: config.keepalive,
            next_keepalive: None,
            quiet_after: config.link_quiet,
            seq: 0,
            echo: 0,
            nonces: VecDeque::new(),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up
    }

    pub(super) fn state(&self) -> LinkState {
        match (&self.session, self.up) {
            (None, _) => LinkState::Connecting,
            (Some(_), true) => LinkState::Up,
            (Some(_), false) => LinkState::Quiet,
        }
    }

    /// Checks the hop tag and the sender id against the session.
    pub(super) fn verify<T: AsRef<[u8]>>(&self, packet: &Packet<T>) -> bool {
        match &self.session {
            Some(s) => packet.sender() == s.their_id && s.keys.recv.verify_packet(packet),
            None => false,
        }
    }

    pub(super) fn next_timer(&self) -> Option<Instant> {
        let quiet = if self.up {
            self.last_heard.map(|t| t + self.quiet_after)
        } else {
            None
        };
        [self.next_register, self.next_keepalive, quiet]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What the links need from the gateway for a registration: who we are, randomness for
/// ephemeral keys and nonces, and the wall clock (Unix ms) at `now`.
pub(super) struct Credentials<'a> {
    pub(super) identity: &'a Identity,
    pub(super) rng: &'a SystemRandom,
    pub(super) unix_ms: u64,
}

/// The link table (relays first, then peers, in config order) and its sessions.
pub(super) struct Links {
    table: Vec<Link>,
    by_addr: HashMap<SocketAddr, LinkId>,
    /// The relay that carries transactions and requests (first live relay in config order).
    primary: Option<LinkId>,
    register_retry: Duration,
    link_quiet: Duration,
    /// Our keepalive period, told to peers that register with us.
    keepalive: Duration,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<GatewayEvent>,
    stats: LinkStats,
}

/// The datagram of `message` from node `sender`, at no hops, unsigned; `None` if it does not
/// fit a datagram.
fn datagram(sender: u32, flags: u8, message: Message<'_>) -> Option<Vec<u8>> {
    let repr = Repr {
        sender,
        hops: 0,
        flags,
        message,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = repr.emit(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

impl Index<LinkId> for Links {
    type Output = Link;

    fn index(&self, link: LinkId) -> &Link {
        &self.table[link]
    }
}

impl Links {
    pub(super) fn new(config: &CoreConfig, our_key: PublicKey, now: Instant) -> Self {
        // (kind, address, key, whether we register): we register with every relay; with a
        // peer, the smaller key registers (one session per pair, no race).
        let relays = (config.relays.iter().enumerate())
            .map(|(i, r)| (LinkKind::Relay(i), r.addr, r.public_key, true));
        let peers = (config.peers.iter().enumerate()).map(|(i, p)| {
            let initiator = our_key.0 < p.public_key.0;
            (LinkKind::Peer(i), p.addr, p.public_key, initiator)
        });
        let table: Vec<Link> = relays
            .chain(peers)
            .map(|(kind, addr, key, initiator)| Link::new(kind, addr, key, initiator, now, config))
            .collect();
        let by_addr = table.iter().enumerate().map(|(i, l)| (l.addr, i)).collect();
        Links {
            table,
            by_addr,
            primary: None,
            register_retry: config.register_retry,
            link_quiet: config.link_quiet,
            keepalive: config.keepalive,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Link> {
        self.table.iter()
    }

    pub(super) fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The link whose far end is at `addr`.
    pub(super) fn by_addr(&self, addr: &SocketAddr) -> Option<LinkId> {
        self.by_addr.get(addr).copied()
    }

    /// The relay that carries transactions now.
    pub(super) fn primary(&self) -> Option<LinkId> {
        self.primary
    }

    /// Links whose session is up, of one kind.
    pub(super) fn live(&self, relays: bool) -> Vec<LinkId> {
        self.table
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_up() && matches!(l.kind, LinkKind::Relay(_)) == relays)
            .map(|(i, _)| i)
            .collect()
    }

    /// Every link whose session is up.
    pub(super) fn live_all(&self) -> Vec<LinkId> {
        (0..self.table.len())
            .filter(|&l| self.table[l].is_up())
            .collect()
    }

    /// The live link to the peer whose identity is `key`.
    pub(super) fn peer_link_of(&self, key: &PublicKey) -> Option<LinkId> {
        self.table
            .iter()
            .position(|l| matches!(l.kind, LinkKind::Peer(_)) && l.remote_key == *key && l.is_up())
    }

    /// `message` as a datagram for `link`, signed with its hop key; `None` when the link has
    /// no session.
    pub(super) fn sign(
        &self,
        link: LinkId,
        message: Message<'_>,
        flags: u8,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let l = self.table.get(link)?;
        let session = l.session.as_ref()?;
        let mut buf = datagram(session.our_id, flags, message)?;
        session.keys.send.sign_header(&mut buf).ok()?;
        Some((l.addr, buf))
    }

    /// Registration datagrams and keepalives to send, in order.
    pub(super) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub(super) fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }

    /// The next instant [`Links::handle_timeout`] has work.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.table.iter().filter_map(Link::next_timer).min()
    }

    /// A keepalive came over `link`: its sequence is echoed in ours.
    pub(super) fn handle_keepalive(&mut self, link: LinkId, k: &KeepaliveRepr) {
        if let Some(l) = self.table.get_mut(link) {
            l.echo = k.seq;
        }
    }

    /// Something verified came over `link`.
    pub(super) fn heard(&mut self, now: Instant, link: LinkId) {
        let Some(l) = self.table.get_mut(link) else {
            return;
        };
        l.last_heard = Some(now);
        if !l.up {
            l.up = true;
            if l.next_keepalive.is_none() {
                l.next_keepalive = Some(now);
            }
            self.events.push_back(GatewayEvent::LinkUp {
                link,
                kind: l.kind,
                addr: l.addr,
            });
            self.choose_primary();
        }
    }

    /// The primary relay: the first live one in config order.
    fn choose_primary(&mut self) {
        let new = self
            .table
            .iter()
            .position(|l| matches!(l.kind, LinkKind::Relay(_)) && l.up);
        // A failover is the primary going quiet, not a preferred relay coming up.
        if let Some(old) = self.primary {
            if new != Some(old) && !self.table[old].up {
                self.stats.failovers += 1;
            }
        }
        self.primary = new;
    }

    /// Quiet detection, registration retries and keepalives.
    pub(super) fn handle_timeout(&mut self, now: Instant, creds: &Credentials<'_>) {
        for id in 0..self.table.len() {
            let l = &mut self.table[id];
            // Quiet: the far end said nothing for `quiet_after`.
            if l.up && l.last_heard.is_some_and(|t| now >= t + l.quiet_after) {
                l.up = false;
                l.next_keepalive = None;
                if l.initiator {
                    l.next_register = Some(now);
                }
                self.events.push_back(GatewayEvent::LinkDown {
                    link: id,
                    kind: l.kind,
                    addr: l.addr,
                });
                self.choose_primary();
            }
            let l = &mut self.table[id];
            if l.next_register.is_some_and(|t| now >= t) {
                l.next_register = Some(now + self.register_retry);
                self.send_register(id, creds);
            }
            let l = &mut self.table[id];
            if l.up && l.next_keepalive.is_some_and(|t| now >= t) {
                l.next_keepalive = Some(now + l.keepalive_every);
                l.seq = l.seq.wrapping_add(1);
                let ka = KeepaliveRepr {
                    seq: l.seq,
                    echo: l.echo,
                };
                if let Some(d) = self.sign(id, Message::Keepalive(ka), 0) {
                    self.transmits.push_back(d);
                }
            }
        }
    }

    fn send_register(&mut self, link: LinkId, creds: &Credentials<'_>) {
        let Ok(ephemeral) = EphemeralKey::generate(creds.rng) else {
            return;
        };
        let mut nonce = [0u8; 16];
        if creds.rng.fill(&mut nonce).is_err() {
            return;
        }
        let request = identity::register(creds.identity, &ephemeral, nonce, creds.unix_ms);
        let Some(buf) = datagram(0, 0, Message::Register(request)) else {
            return;
        };
        let l = &mut self.table[link];
        l.pending = Some(PendingRegister { ephemeral, request });
        self.transmits.push_back((l.addr, buf));
    }

    /// A relay's (or responding peer's) answer to our registration.
    pub(super) fn handle_register_ack<T: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &Packet<T>,
    ) {
        let Some(&id) = self.by_addr.get(&from) else {
            self.stats.dropped_unknown_peer += 1;
            return;
        };
        let Ok(Message::RegisterAck(ack)) = Repr::parse(packet).map(|r| r.message) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let l = &mut self.table[id];
        let Some(pending) = l.pending.take_if(|p| p.request.nonce == ack.nonce) else {
            self.stats.dropped_register += 1;
            return;
        };
        if identity::verify_register_ack(&ack, &pending.request, &l.remote_key).is_err() {
            self.stats.dropped_register += 1;
            l.pending = Some(pending);
            return;
        }
        if ack.status != register_status::ACCEPTED {
            self.events.push_back(GatewayEvent::RegisterRefused {
                link: id,
                status: ack.status,
            });
            return;
        }
        let ctx = HandshakeContext {
            nonce: &pending.request.nonce,
            initiator_ephemeral: &pending.request.ephemeral,
            responder_ephemeral: &ack.ephemeral,
            initiator_node: ack.node_id,
            responder_node: packet.sender(),
        };
        let Ok(keys) = pending
            .ephemeral
            .agree(&ack.ephemeral, &ctx, Role::Initiator)
        else {
            self.stats.dropped_register += 1;
            return;
        };
        l.session = Some(Session {
            keys,
            our_id: ack.node_id,
            their_id: packet.sender(),
        });
        if ack.keepalive_ms > 0 {
            l.keepalive_every = Duration::from_millis(u64::from(ack.keepalive_ms).max(50));
            // The relay answers each keepalive: quiet means several periods without a word.
            l.quiet_after = self.link_quiet.max(l.keepalive_every * 5 / 2);
        }
        l.next_register = None;
        l.next_keepalive = Some(now);
        self.stats.registrations += 1;
        self.heard(now, id);
    }

    /// A peer gateway registers with us (we are the responder of the direct link).
    pub(super) fn handle_register<T: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &Packet<T>,
        creds: &Credentials<'_>,
    ) {
        let Ok(Message::Register(req)) = Repr::parse(packet).map(|r| r.message) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let unix_ms = creds.unix_ms;
        let Some(id) = self.table.iter().position(|l| {
            matches!(l.kind, LinkKind::Peer(_)) && !l.initiator && l.remote_key.0 == req.identity
        }) else {
            self.stats.dropped_register += 1;
            return;
        };
        if identity::verify_register(&req, unix_ms, REGISTER_WINDOW_MS).is_err()
            || self.table[id].nonces.contains(&req.nonce)
        {
            self.stats.dropped_register += 1;
            return;
        }
        let Ok(ephemeral) = EphemeralKey::generate(creds.rng) else {
            return;
        };
        let ack = identity::register_ack(
            creds.identity,
            &ephemeral,
            &req,
            register_status::ACCEPTED,
            PEER_INITIATOR_ID,
            unix_ms,
            self.keepalive.as_millis().min(u128::from(u32::MAX)) as u32,
        );
        let ctx = HandshakeContext {
            nonce: &req.nonce,
            initiator_ephemeral: &req.ephemeral,
            responder_ephemeral: &ack.ephemeral,
            initiator_node: PEER_INITIATOR_ID,
            responder_node: PEER_RESPONDER_ID,
        };
        let Ok(keys) = ephemeral.agree(&req.ephemeral, &ctx, Role::Responder) else {
            self.stats.dropped_register += 1;
            return;
        };
        let Some(buf) = datagram(PEER_RESPONDER_ID, 0, Message::RegisterAck(ack)) else {
            return;
        };
        // The peer may have moved (NAT rebinding): follow its address.
        let old = self.table[id].addr;
        if old != from {
            self.by_addr.remove(&old);
            self.by_addr.insert(from, id);
        }
        let l = &mut self.table[id];
        l.addr = from;
        l.nonces.push_back(req.nonce);
        if l.nonces.len() > NONCES_KEPT {
            l.nonces.pop_front();
        }
        l.session = Some(Session {
            keys,
            our_id: PEER_RESPONDER_ID,
            their_id: PEER_INITIATOR_ID,
        });
        self.transmits.push_back((from, buf));
        self.stats.registrations += 1;
        self.heard(now, id);
    }
}
