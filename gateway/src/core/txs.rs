//! Transactions as one owned state machine ([`Txs`]): the short-ID store (§6.1); node → relays
//! (§2.2) and short-ID assignment (§2.3); relays → store → node; serving tx requests (§2.4).
//!
//! Contract: the gateway feeds it the node's transactions and the transaction messages of its
//! links, and calls [`Txs::handle_timeout`]; after each call it drains
//! [`Txs::poll_transmit`] (datagrams for the paced queue), [`Txs::poll_announce`]
//! (transactions for the node) and [`Txs::poll_arrived`] (transactions that may complete
//! inbound blocks). Blocks read the store through [`Txs::store`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bitcoin::Transaction;
use photon_protocol::chain::{Bitcoin, ChainAdapter, TxIds};
use photon_protocol::fifo::FifoMap;
use photon_protocol::roster::Roster;
use photon_protocol::shortid::{
    Inserted, ShortId, ShortIdRange, TxStore, TxStoreConfig, TxStoreError, TxStoreStats,
};
use photon_protocol::wire::{
    Message, ShortIdAssignRepr, TransactionRepr, TxRequestRepr, MAX_TX_LEN,
};

use super::links::Links;
use super::stats::TxStats;
use super::{LinkId, LinkKind};

/// (link, short ID) pairs answered recently, remembered at most.
const ANSWERED_MEMORY: usize = 16_384;
/// Partial multi-datagram transactions kept at once, and their bytes together.
const MAX_PARTIALS: usize = 64;
const MAX_PARTIAL_BYTES: usize = 16 << 20;
/// A partial transaction not completed within this is dropped.
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(5);

struct Partial {
    /// The bytes so far, up to the furthest fragment that came.
    data: Vec<u8>,
    tx_len: u32,
    got: Vec<bool>,
    short_id: Option<u32>,
    started: Instant,
    /// Creation order, to evict the oldest first.
    seq: u64,
}

/// A transaction of our node sent to the relay, waiting for its short ID.
struct Awaiting {
    ids: TxIds,
    tx: Vec<u8>,
    transfer: u64,
    sent_at: Instant,
    tries: u32,
}

/// Resend a transaction whose short ID did not come back after this long (datagrams get
/// lost; the relay gives the same (origin, transfer) the same ID).
const TX_RESEND_AFTER: Duration = Duration::from_millis(400);
/// Sends of one transaction at most.
const TX_TRIES: u32 = 4;
/// Resends per timer run, so a burst of losses is spread out.
const TX_RESENDS_PER_RUN: usize = 256;

pub(super) struct Txs {
    store: TxStore,
    /// Our node's transactions sent to the relay, waiting for their short ID, by txid.
    awaiting: HashMap<[u8; 32], Awaiting>,
    awaiting_order: VecDeque<[u8; 32]>,
    max_awaiting: usize,
    partials: HashMap<(LinkId, u64), Partial>,
    partial_bytes: usize,
    next_partial_seq: u64,
    next_transfer: u64,
    next_resend: Option<Instant>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    /// (link, short ID) → when we last answered it there (F7: once per ID per link).
    answered: FifoMap<(LinkId, u32), Instant>,
    answer_repeat: Duration,
    /// With a roster, the relays' short-ID ranges: an ID outside all of them is no relay's.
    ranges: Option<Vec<ShortIdRange>>,
    announce: VecDeque<Transaction>,
    arrived: VecDeque<(ShortId, Vec<u8>)>,
    stats: TxStats,
}

impl Txs {
    pub(super) fn new(
        store: TxStoreConfig,
        max_awaiting: usize,
        answer_repeat: Duration,
        roster: Option<&Roster>,
    ) -> Self {
        Txs {
            store: TxStore::new(store),
            awaiting: HashMap::new(),
            awaiting_order: VecDeque::new(),
            max_awaiting: max_awaiting.max(1),
            partials: HashMap::new(),
            partial_bytes: 0,
            next_partial_seq: 0,
            next_transfer: 1,
            next_resend: None,
            transmits: VecDeque::new(),
            answered: FifoMap::new(ANSWERED_MEMORY),
            answer_repeat,
            ranges: roster.map(|r| r.relays().map(|(_, range)| range).collect()),
            announce: VecDeque::new(),
            arrived: VecDeque::new(),
            stats: TxStats::default(),
        }
    }

    /// A newer roster: its relays' ranges from now on.
    pub(super) fn set_roster(&mut self, roster: &Roster) {
        self.ranges = Some(roster.relays().map(|(_, range)| range).collect());
    }

    /// Bytes held by partial transactions now.
    #[cfg(test)]
    pub(super) fn partial_bytes(&self) -> usize {
        self.partial_bytes
    }

    /// The short-ID store blocks are compressed against and decompressed from.
    pub(super) fn store(&self) -> &TxStore {
        &self.store
    }

    /// For tests that give a gateway transactions as if a relay had.
    #[cfg(test)]
    pub(super) fn store_mut(&mut self) -> &mut TxStore {
        &mut self.store
    }

    pub(super) fn store_stats(&self) -> TxStoreStats {
        self.store.stats()
    }

    pub(super) fn stats(&self) -> &TxStats {
        &self.stats
    }

    /// Transaction datagrams, hop-signed, for the paced queue.
    pub(super) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Transactions from the network for the node.
    pub(super) fn poll_announce(&mut self) -> Option<Transaction> {
        self.announce.pop_front()
    }

    /// Transactions now in the store under a short ID, for blocks that wait for them.
    pub(super) fn poll_arrived(&mut self) -> Option<(ShortId, Vec<u8>)> {
        self.arrived.pop_front()
    }

    /// When [`Txs::handle_timeout`] resends.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.next_resend
    }

    fn await_id(&mut self, ids: TxIds, tx: Vec<u8>, transfer: u64, now: Instant) {
        let a = Awaiting {
            ids,
            tx,
            transfer,
            sent_at: now,
            tries: 1,
        };
        if self.awaiting.insert(ids.txid, a).is_none() {
            self.awaiting_order.push_back(ids.txid);
        }
        if self.next_resend.is_none() {
            self.next_resend = Some(now + TX_RESEND_AFTER);
        }
        while self.awaiting_order.len() > self.max_awaiting {
            if let Some(old) = self.awaiting_order.pop_front() {
                self.awaiting.remove(&old);
            }
        }
    }

    /// Housekeeping: store expiry, stale partial transactions.
    pub(super) fn expire(&mut self, now: Instant) {
        self.store.expire(now);
        let before = self.partials.len();
        self.partials
            .retain(|_, p| now.saturating_duration_since(p.started) < PARTIAL_TIMEOUT);
        if self.partials.len() != before {
            self.partial_bytes = self.partials.values().map(|p| p.data.len()).sum();
        }
        // The order list may name entries already taken out: keep it in step.
        let awaiting = &self.awaiting;
        self.awaiting_order.retain(|t| awaiting.contains_key(t));
    }

    pub(super) fn handle_node_tx(&mut self, now: Instant, tx: &Transaction, links: &Links) {
        let ids = Bitcoin::tx_ids(tx);
        if self.store.id_by_wtxid(&ids.wtxid).is_some() {
            // Came from the network first: nothing to tell the relays.
            self.stats.txs_duplicate += 1;
            return;
        }
        self.stats.txs_from_node += 1;
        let bytes = Bitcoin::encode_tx(tx);
        let Some(relay) = links.primary() else {
            // No relay: the transaction is sent whole in blocks; nothing else to do.
            return;
        };
        let transfer = self.next_transfer;
        self.next_transfer += 1;
        self.send_tx(links, relay, transfer, None, &bytes);
        self.await_id(ids, bytes, transfer, now);
    }

    /// Sends again the transactions whose short ID has not come back.
    pub(super) fn handle_timeout(&mut self, now: Instant, links: &Links) {
        if self.next_resend.is_none_or(|t| now < t) {
            return;
        }
        self.next_resend = None;
        let Some(relay) = links.primary() else {
            if !self.awaiting.is_empty() {
                self.next_resend = Some(now + TX_RESEND_AFTER);
            }
            return;
        };
        let mut due = Vec::new();
        let mut pending = false;
        for txid in &self.awaiting_order {
            let Some(a) = self.awaiting.get(txid) else {
                continue;
            };
            if a.tries >= TX_TRIES {
                continue;
            }
            pending = true;
            if now >= a.sent_at + TX_RESEND_AFTER && due.len() < TX_RESENDS_PER_RUN {
                due.push(*txid);
            }
        }
        for txid in due {
            let Some(a) = self.awaiting.get_mut(&txid) else {
                continue;
            };
            a.tries += 1;
            a.sent_at = now;
            let (transfer, tx) = (a.transfer, std::mem::take(&mut a.tx));
            self.send_tx(links, relay, transfer, None, &tx);
            self.stats.tx_resends += 1;
            if let Some(a) = self.awaiting.get_mut(&txid) {
                a.tx = tx;
            }
        }
        if pending {
            self.next_resend = Some(now + TX_RESEND_AFTER / 2);
        }
    }

    /// Sends a transaction as one or more datagrams (§2.2).
    fn send_tx(
        &mut self,
        links: &Links,
        link: LinkId,
        transfer: u64,
        short_id: Option<u32>,
        bytes: &[u8],
    ) {
        let Ok(tx_len) = u32::try_from(bytes.len()) else {
            return;
        };
        if bytes.is_empty() || tx_len > MAX_TX_LEN {
            return;
        }
        let chunks = bytes.len().div_ceil(TransactionRepr::MAX_DATA);
        let Ok(count) = u16::try_from(chunks) else {
            return;
        };
        for (i, data) in bytes.chunks(TransactionRepr::MAX_DATA).enumerate() {
            let t = TransactionRepr {
                transfer,
                index: i as u16,
                count,
                short_id,
                tx_len,
                offset: (i * TransactionRepr::MAX_DATA) as u32,
                data,
            };
            if let Some(d) = links.sign(link, Message::Transaction(t), 0) {
                self.transmits.push_back(d);
            }
        }
    }

    pub(super) fn handle_transaction(
        &mut self,
        now: Instant,
        links: &Links,
        link: LinkId,
        t: &TransactionRepr<'_>,
    ) {
        let whole = t.count == 1 && t.offset == 0 && t.data.len() == t.tx_len as usize;
        let complete: Option<(Option<u32>, Vec<u8>)> = if whole {
            Some((t.short_id, t.data.to_vec()))
        } else {
            self.reassemble(now, link, t)
        };
        let Some((short_id, bytes)) = complete else {
            return;
        };
        let Ok(tx) = Bitcoin::decode_tx(&bytes) else {
            self.stats.txs_bad += 1;
            return;
        };
        let Some(id) = short_id else {
            // Only relays name transactions; a peer's transaction without an ID is not ours
            // to store.
            self.stats.dropped_unexpected += 1;
            return;
        };
        let ids = Bitcoin::tx_ids(&tx);
        if matches!(links[link].kind, LinkKind::Peer(_)) {
            // Only relays assign IDs (§6.1): a peer's answer to our tx request may complete a
            // waiting block (whose merkle root checks it), but it binds nothing, and an ID we
            // hold is never offered other bytes.
            self.stats.short_id_not_from_relay += 1;
            match self.store.ids(ShortId(id)) {
                Some(held) if held.wtxid == ids.wtxid => self.stats.txs_duplicate += 1,
                Some(_) => self.stats.short_id_conflicts += 1,
                None => self.arrived.push_back((ShortId(id), bytes)),
            }
            return;
        }
        if let Some(ranges) = &self.ranges {
            // Every relay assigns from its roster range; a relay passes on its peers' IDs, so
            // the ID must lie in some relay's range (not necessarily this one's).
            if !ranges.iter().any(|r| r.contains(ShortId(id))) {
                self.stats.short_id_out_of_range += 1;
                return;
            }
        }
        let ours = self.awaiting.remove(&ids.txid).is_some();
        if ours {
            self.stats.short_ids_assigned += 1;
        }
        match self.store.insert(ShortId(id), ids, &bytes, now) {
            Ok(Inserted::New) => {
                if !ours {
                    self.stats.txs_from_network += 1;
                    self.announce.push_back(tx);
                }
                self.arrived.push_back((ShortId(id), bytes));
            }
            Ok(Inserted::AlreadyKnown(_)) => self.stats.txs_duplicate += 1,
            Err(TxStoreError::IdTaken { .. }) => self.stats.short_id_conflicts += 1,
            Err(TxStoreError::TooLarge { .. }) => self.stats.txs_bad += 1,
        }
    }

    /// Reassembles a multi-datagram transaction by (link, transfer) (F9): a partial holds
    /// only the bytes that came (its buffer grows to the furthest fragment, not to the length
    /// the first fragment claims), and when the slots or the byte budget are full the oldest
    /// partial is evicted (counted `partials_evicted`) rather than the new one refused, so a
    /// few junk first fragments cannot keep honest transactions out.
    fn reassemble(
        &mut self,
        now: Instant,
        link: LinkId,
        t: &TransactionRepr<'_>,
    ) -> Option<(Option<u32>, Vec<u8>)> {
        let key = (link, t.transfer);
        let at = t.offset as usize;
        let end = at + t.data.len();
        if end > t.tx_len as usize || usize::from(t.index) >= usize::from(t.count) {
            self.stats.txs_bad += 1;
            return None;
        }
        if !self.partials.contains_key(&key) {
            while self.partials.len() >= MAX_PARTIALS {
                if !self.evict_oldest_partial() {
                    break;
                }
            }
            self.partials.insert(
                key,
                Partial {
                    data: Vec::new(),
                    tx_len: t.tx_len,
                    got: vec![false; usize::from(t.count)],
                    short_id: t.short_id,
                    started: now,
                    seq: self.next_partial_seq,
                },
            );
            self.next_partial_seq += 1;
        }
        let p = self.partials.get(&key)?;
        if p.tx_len != t.tx_len || p.got.len() != usize::from(t.count) {
            self.stats.txs_bad += 1;
            return None;
        }
        let grow = end.saturating_sub(p.data.len());
        while self.partial_bytes + grow > MAX_PARTIAL_BYTES && self.partials.len() > 1 {
            if !self.evict_oldest_partial_except(key) {
                break;
            }
        }
        if self.partial_bytes + grow > MAX_PARTIAL_BYTES {
            self.stats.txs_bad += 1;
            if let Some(p) = self.partials.remove(&key) {
                self.partial_bytes -= p.data.len();
            }
            return None;
        }
        let p = self.partials.get_mut(&key)?;
        if p.data.len() < end {
            p.data.resize(end, 0);
            self.partial_bytes += grow;
        }
        p.data[at..end].copy_from_slice(t.data);
        p.got[usize::from(t.index)] = true;
        if !p.got.iter().all(|&g| g) || p.data.len() != p.tx_len as usize {
            return None;
        }
        let p = self.partials.remove(&key)?;
        self.partial_bytes -= p.data.len();
        Some((p.short_id, p.data))
    }

    fn evict_oldest_partial(&mut self) -> bool {
        self.evict_oldest_partial_except((usize::MAX, u64::MAX))
    }

    /// Drops the oldest partial other than `keep`; `false` if there is none.
    fn evict_oldest_partial_except(&mut self, keep: (LinkId, u64)) -> bool {
        let Some(oldest) = self
            .partials
            .iter()
            .filter(|(k, _)| **k != keep)
            .min_by_key(|(_, p)| p.seq)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        if let Some(p) = self.partials.remove(&oldest) {
            self.partial_bytes -= p.data.len();
            self.stats.partials_evicted += 1;
        }
        true
    }

    /// A relay's short-ID assignment (§2.3); from a peer gateway it is refused (only relays
    /// assign, F2).
    pub(super) fn handle_short_id_assign(
        &mut self,
        now: Instant,
        links: &Links,
        link: LinkId,
        a: &ShortIdAssignRepr,
    ) {
        if !matches!(links[link].kind, LinkKind::Relay(_)) {
            self.stats.short_id_not_from_relay += 1;
            return;
        }
        for (txid, id) in &a.entries {
            let Some(a) = self.awaiting.remove(txid) else {
                continue;
            };
            match self.store.insert(ShortId(*id), a.ids, &a.tx, now) {
                Ok(Inserted::New) => {
                    self.stats.short_ids_assigned += 1;
                    self.arrived.push_back((ShortId(*id), a.tx));
                }
                Ok(Inserted::AlreadyKnown(_)) => self.stats.txs_duplicate += 1,
                Err(TxStoreError::IdTaken { .. }) => self.stats.short_id_conflicts += 1,
                Err(TxStoreError::TooLarge { .. }) => self.stats.txs_bad += 1,
            }
        }
    }

    /// Someone asks for transactions of a block. Over a direct peer link we answer whatever
    /// we hold; over a relay only for our own streams (`ours`: the relay passes the request
    /// to every gateway, and one answer, the origin's, is enough).
    ///
    /// Each ID is answered once, to the asking link only: an ID named twice in one request,
    /// or answered on this direct peer link within `answer_repeat`, is not answered again
    /// (counted `tx_request_ids_refused`; over a relay link the relay refuses each asker's
    /// repeats); the paced queue's per-link byte limit bounds the rest (F7).
    pub(super) fn handle_tx_request(
        &mut self,
        now: Instant,
        links: &Links,
        link: LinkId,
        r: &TxRequestRepr,
        ours: bool,
    ) {
        if matches!(links[link].kind, LinkKind::Relay(_)) && !ours {
            return;
        }
        // Behind a relay link are many askers (the relay refuses each one's own repeats and
        // sends the answer only to them): the repeat window is per direct peer only.
        let peer = matches!(links[link].kind, LinkKind::Peer(_));
        for (i, &id) in r.short_ids.iter().enumerate() {
            let recent = peer
                && self
                    .answered
                    .get(&(link, id))
                    .is_some_and(|&t| now.saturating_duration_since(t) < self.answer_repeat);
            if recent || r.short_ids[..i].contains(&id) {
                self.stats.tx_request_ids_refused += 1;
                continue;
            }
            let Some(tx) = self.store.get(ShortId(id)).map(<[u8]>::to_vec) else {
                continue;
            };
            let transfer = self.next_transfer;
            self.next_transfer += 1;
            self.send_tx(links, link, transfer, Some(id), &tx);
            self.answered.remove(&(link, id));
            self.answered.insert((link, id), now);
            self.stats.tx_requests_served += 1;
        }
    }
}
