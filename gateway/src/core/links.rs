//! Links to relays and peer gateways: registration (§2.8, §2.9, §5.4), hop keys (§4.2),
//! keepalive (§2.10), quiet detection and relay failover.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use photon_protocol::hopauth::{HandshakeContext, HopKeys, Role};
use photon_protocol::identity::{self, EphemeralKey, PublicKey};
use photon_protocol::wire::{
    register_status, KeepaliveRepr, Message, Packet, RegisterRepr, Repr, MAX_DATAGRAM,
};
use ring::rand::SecureRandom;

use super::{CoreConfig, Gateway, GatewayEvent, LinkId};

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
    pub(super) echo: u32,
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

impl Gateway {
    /// Something verified came over `link`.
    pub(super) fn heard(&mut self, now: Instant, link: LinkId) {
        let l = &mut self.links[link];
        l.last_heard = Some(now);
        if !l.up {
            l.up = true;
            if l.next_keepalive.is_none() {
                l.next_keepalive = Some(now);
            }
            let ev = GatewayEvent::LinkUp {
                link,
                kind: l.kind,
                addr: l.addr,
            };
            self.event(ev);
            self.choose_primary();
        }
    }

    /// The primary relay: the first live one in config order.
    fn choose_primary(&mut self) {
        let new = self
            .links
            .iter()
            .position(|l| matches!(l.kind, super::LinkKind::Relay(_)) && l.up);
        // A failover is the primary going quiet, not a preferred relay coming up.
        if let Some(old) = self.primary {
            if new != Some(old) && !self.links[old].up {
                self.stats.failovers += 1;
            }
        }
        self.primary = new;
    }

    pub(super) fn link_timers(&mut self, now: Instant) {
        for id in 0..self.links.len() {
            let l = &mut self.links[id];
            // Quiet: the far end said nothing for `quiet_after`.
            if l.up && l.last_heard.is_some_and(|t| now >= t + l.quiet_after) {
                l.up = false;
                l.next_keepalive = None;
                if l.initiator {
                    l.next_register = Some(now);
                }
                let ev = GatewayEvent::LinkDown {
                    link: id,
                    kind: l.kind,
                    addr: l.addr,
                };
                self.event(ev);
                self.choose_primary();
            }
            let l = &mut self.links[id];
            if l.next_register.is_some_and(|t| now >= t) {
                l.next_register = Some(now + self.config.register_retry);
                self.send_register(now, id);
            }
            let l = &mut self.links[id];
            if l.up && l.next_keepalive.is_some_and(|t| now >= t) {
                l.next_keepalive = Some(now + l.keepalive_every);
                l.seq = l.seq.wrapping_add(1);
                let ka = KeepaliveRepr {
                    seq: l.seq,
                    echo: l.echo,
                };
                self.send_message(id, Message::Keepalive(ka), 0);
            }
        }
    }

    fn send_register(&mut self, now: Instant, link: LinkId) {
        let Ok(ephemeral) = EphemeralKey::generate(&self.rng) else {
            return;
        };
        let mut nonce = [0u8; 16];
        if self.rng.fill(&mut nonce).is_err() {
            return;
        }
        let request = identity::register(&self.identity, &ephemeral, nonce, self.unix_ms(now));
        let repr = Repr {
            sender: 0,
            hops: 0,
            flags: 0,
            message: Message::Register(request),
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let Ok(n) = repr.emit(&mut buf) else {
            return;
        };
        buf.truncate(n);
        let l = &mut self.links[link];
        l.pending = Some(PendingRegister { ephemeral, request });
        self.control.push_back((l.addr, buf));
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
        let Ok(Repr {
            message: Message::RegisterAck(ack),
            ..
        }) = Repr::parse(packet)
        else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let l = &mut self.links[id];
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
            self.event(GatewayEvent::RegisterRefused {
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
            l.quiet_after = self.config.link_quiet.max(l.keepalive_every * 5 / 2);
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
    ) {
        let Ok(Repr {
            message: Message::Register(req),
            ..
        }) = Repr::parse(packet)
        else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let unix_ms = self.unix_ms(now);
        let Some(id) = self.links.iter().position(|l| {
            matches!(l.kind, LinkKind::Peer(_)) && !l.initiator && l.remote_key.0 == req.identity
        }) else {
            self.stats.dropped_register += 1;
            return;
        };
        if identity::verify_register(&req, unix_ms, REGISTER_WINDOW_MS).is_err()
            || self.links[id].nonces.contains(&req.nonce)
        {
            self.stats.dropped_register += 1;
            return;
        }
        let Ok(ephemeral) = EphemeralKey::generate(&self.rng) else {
            return;
        };
        let ack = identity::register_ack(
            &self.identity,
            &ephemeral,
            &req,
            register_status::ACCEPTED,
            PEER_INITIATOR_ID,
            unix_ms,
            self.config.keepalive.as_millis().min(u128::from(u32::MAX)) as u32,
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
        let repr = Repr {
            sender: PEER_RESPONDER_ID,
            hops: 0,
            flags: 0,
            message: Message::RegisterAck(ack),
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let Ok(n) = repr.emit(&mut buf) else {
            return;
        };
        buf.truncate(n);
        // The peer may have moved (NAT rebinding): follow its address.
        let old = self.links[id].addr;
        if old != from {
            self.by_addr.remove(&old);
            self.by_addr.insert(from, id);
        }
        let l = &mut self.links[id];
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
        self.control.push_back((from, buf));
        self.stats.registrations += 1;
        self.heard(now, id);
    }
}
