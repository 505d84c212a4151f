//! The gateway's counters: [`GatewayStats`], and the counters each part of the core keeps (links,
//! transactions, inbound and outbound streams), which [`super::Gateway::stats`] adds to the
//! router's own.

/// Counters (drops are counted, never logged per datagram).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Not a Photon datagram (§1.5 errors).
    pub dropped_malformed: u64,
    /// From an address that is none of our links.
    pub dropped_unknown_peer: u64,
    /// Hop tag did not verify, or no session yet.
    pub dropped_bad_tag: u64,
    /// Registrations refused (bad signature, stale, unknown identity, replay).
    pub dropped_register: u64,
    /// Messages we do not expect on that link.
    pub dropped_unexpected: u64,
    /// Datagrams not queued: their destination's paced (transactions) or control queue was
    /// at its byte limit (F7).
    pub dropped_paced_full: u64,
    pub dropped_control_full: u64,
    pub blocks_from_node: u64,
    pub blocks_from_network: u64,
    /// Blocks already known (delivered or seen from the node) when they came again.
    pub blocks_duplicate: u64,
    pub txs_from_node: u64,
    pub txs_from_network: u64,
    pub txs_duplicate: u64,
    pub txs_bad: u64,
    /// Block bytes (chain encoding) and compressed bytes, out and in.
    pub block_bytes_out: u64,
    pub compressed_bytes_out: u64,
    pub block_bytes_in: u64,
    pub compressed_bytes_in: u64,
    pub receipts_sent: u64,
    pub receipts_received: u64,
    pub receipts_mismatched: u64,
    /// Receipts for our streams through a relay without a signature (§2.5): they name no
    /// receiver, so they do not count toward the key release.
    pub receipts_unsigned: u64,
    /// Signed receipts whose signature does not verify (forged or altered): not counted.
    pub receipts_bad_signature: u64,
    /// Receipts from a receiver already counted for the stream (sent twice, replayed, or both
    /// over a peer link and through a relay), or naming our own key: not counted again.
    pub receipts_duplicate: u64,
    /// Receipts whose receiver is not a member gateway (the roster's, else the trusted origins
    /// and peers): a made-up key, not counted (F1).
    pub receipts_not_member: u64,
    pub key_releases_sent: u64,
    pub key_releases_received: u64,
    pub key_releases_bad: u64,
    /// Key releases held apart because their stream or origin was not known yet (F8).
    pub key_releases_held: u64,
    /// Held key releases dropped (too many for one stream, or the early store full).
    pub key_releases_dropped: u64,
    pub repair_requests_sent: u64,
    pub repair_requests_received: u64,
    /// Our blocks dropped before they were out and released, because
    /// `MAX_ACTIVE_OUT_STREAMS` of them were under way at once.
    pub out_streams_dropped: u64,
    pub tx_requests_sent: u64,
    pub txs_requested: u64,
    pub tx_requests_served: u64,
    /// Our node's transactions (or their short IDs) that came back to us with an ID.
    pub short_ids_assigned: u64,
    /// IDs of tx requests not answered: named twice in one request, or answered on that
    /// link within `tx_answer_repeat` (F7).
    pub tx_request_ids_refused: u64,
    /// Short-ID bindings refused because the ID is held for another transaction (F2).
    pub short_id_conflicts: u64,
    /// Short IDs named by a peer gateway (only relays assign): bound nowhere (F2).
    pub short_id_not_from_relay: u64,
    /// Short IDs from a relay in no roster relay's range: bound nowhere (F2).
    pub short_id_out_of_range: u64,
    /// Partial multi-datagram transactions evicted, oldest first, for newer ones (F9).
    pub partials_evicted: u64,
    /// Transactions sent to the relay again because their ID did not come back.
    pub tx_resends: u64,
    pub open_failed: u64,
    /// Payloads that did not decode: unknown format byte (§6.8), bad encoding, wrong chain,
    /// merkle or witness commitment mismatch.
    pub decompress_failed: u64,
    /// Our blocks sent unsealed (`encrypt = false`), and unsealed blocks received.
    pub blocks_out_unsealed: u64,
    pub blocks_in_unsealed: u64,
    pub blocks_given_up: u64,
    /// Decoded blocks not handed to the node (F6): proof of work, duplicate-transaction
    /// mutation, weight.
    pub blocks_invalid_pow: u64,
    pub blocks_invalid_mutated: u64,
    pub blocks_invalid_size: u64,
    /// Invalid blocks by origin key (hex): which trusted origin sends junk. Bounded by the
    /// trusted origins (only their streams decode).
    pub invalid_blocks_by_origin: std::collections::BTreeMap<String, u64>,
    pub peer_fallbacks: u64,
    pub registrations: u64,
    pub failovers: u64,
    /// Newer rosters taken while running (`Gateway::replace_roster`), and roster files
    /// refused (kept the one in force).
    pub roster_updates: u64,
    pub roster_refused: u64,
}

/// Defines the parts' counter structs: `u64` fields, each one also a field of [`GatewayStats`],
/// and `add_to`, which adds them there.
macro_rules! part_counters {
    ($($(#[doc = $doc:literal])* $name:ident { $($(#[doc = $fdoc:literal])* $field:ident,)* })*) => {$(
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub(super) struct $name {
            $($(#[doc = $fdoc])* pub(super) $field: u64,)*
        }

        impl $name {
            /// Adds these counts to `total`'s fields of the same names.
            pub(super) fn add_to(&self, total: &mut GatewayStats) {
                $(total.$field += self.$field;)*
            }
        }
    )*};
}

part_counters! {
    /// Counters of the links ([`super::links`]).
    LinkStats {
        dropped_malformed,
        dropped_unknown_peer,
        dropped_register,
        registrations,
        failovers,
    }

    /// Counters of the transaction side ([`super::txs`]).
    TxStats {
        txs_from_node,
        txs_from_network,
        txs_duplicate,
        txs_bad,
        short_ids_assigned,
        tx_resends,
        tx_requests_served,
        /// A peer's transaction without a short ID.
        dropped_unexpected,
        /// Tx-request IDs not answered: repeated within a request, or answered on that link
        /// within `answer_repeat` (F7).
        tx_request_ids_refused,
        /// Partial transactions evicted (oldest first) to make room for a new one (F9).
        partials_evicted,
        /// Bindings refused: the short ID is held for another transaction (F2).
        short_id_conflicts,
        /// Short IDs named by a peer gateway (not a relay): never bound in the store, the
        /// transaction only offered to the blocks waiting for that ID (F2).
        short_id_not_from_relay,
        /// Short IDs from a relay that lie in no roster relay's range: not bound (F2).
        short_id_out_of_range,
    }

    /// Counters of the inbound side ([`super::inbound`]).
    InStats {
        receipts_sent,
        key_releases_received,
        key_releases_bad,
        /// Key releases held because their stream or its origin was not known yet.
        key_releases_held,
        /// Held key releases dropped: more than a few for one stream, or the oldest stream's
        /// forgotten (the store of early releases is full).
        key_releases_dropped,
        repair_requests_sent,
        tx_requests_sent,
        txs_requested,
        open_failed,
        decompress_failed,
        blocks_in_unsealed,
        blocks_given_up,
    }

    /// Counters of the outbound side ([`super::outbound`]).
    OutStats {
        block_bytes_out,
        compressed_bytes_out,
        blocks_out_unsealed,
        receipts_received,
        receipts_mismatched,
        receipts_unsigned,
        receipts_bad_signature,
        receipts_duplicate,
        /// Receipts signed by (or, over a peer link, from) a key that is not a member gateway.
        receipts_not_member,
        key_releases_sent,
        repair_requests_received,
        peer_fallbacks,
        out_streams_dropped,
        /// Receipts and repair requests for streams that are not (or no longer) ours.
        dropped_unexpected,
    }
}
