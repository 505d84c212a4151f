//! The `[control]` section of the relay's TOML configuration (documented in
//! `configs/relay.toml`) and the resolved [`ControlSettings`] the control path runs with.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use photon_protocol::identity::PublicKey;
use photon_protocol::roster::Roster;
use photon_protocol::shortid::{OnExhaustion, ShortIdRange};
use serde::Deserialize;

use crate::ops::config::ConfigError;

/// `[control]`: registration, keepalives, short IDs, repair cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The relay's Ed25519 identity, PKCS#8 (`photon-relay keygen --out FILE`).
    pub identity_file: Option<PathBuf>,
    /// Public keys of the gateways allowed to register (64 hex digits each).
    pub gateways: Vec<PublicKey>,
    /// Accept any gateway identity (testbeds): the allow list is then ignored.
    pub allow_any_gateway: bool,
    /// A registration's timestamp must be within this many ms of the relay's clock.
    pub register_window_ms: u64,
    /// How often gateways should send keepalives (sent to them in the ack).
    pub keepalive_ms: u32,
    /// A gateway silent for this many keepalive intervals is dropped.
    pub expiry_keepalives: u32,
    /// Most gateways registered at once.
    pub max_gateways: usize,
    /// Node ids given to gateways start here.
    pub first_gateway_node_id: u32,
    /// This relay's short-ID range: `short_id_first .. short_id_first + short_id_count`.
    pub short_id_first: u32,
    pub short_id_count: u64,
    /// Start the range again when exhausted (else: stop assigning, counted).
    pub short_id_wrap: bool,
    /// Repair cache bounds.
    pub repair_cache_fragments: usize,
    pub repair_cache_bytes: usize,
    /// Transaction cache bound in bytes (data plus 64 bytes per fragment): recent transactions
    /// by short ID, to answer tx requests at the relay (§2.4). 0 disables it: every request
    /// is passed on to the gateways.
    pub tx_cache_bytes: usize,
    /// A tx request naming an ID served to (or passed on for) the same node within this many
    /// ms is not answered again (F7).
    pub tx_answer_repeat_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            identity_file: None,
            gateways: Vec::new(),
            allow_any_gateway: false,
            register_window_ms: 30_000,
            keepalive_ms: 5_000,
            expiry_keepalives: 3,
            max_gateways: 256,
            first_gateway_node_id: 1000,
            short_id_first: 0,
            short_id_count: 1 << 28,
            short_id_wrap: true,
            repair_cache_fragments: 65_536,
            repair_cache_bytes: 64 << 20,
            tx_cache_bytes: 32 << 20,
            tx_answer_repeat_ms: 400,
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("control.{key}"),
        message: message.into(),
    }
}

impl ControlConfig {
    /// Cross-field checks; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.register_window_ms == 0 {
            return Err(invalid("register_window_ms", "must be at least 1"));
        }
        if self.keepalive_ms == 0 {
            return Err(invalid("keepalive_ms", "must be at least 1"));
        }
        if self.expiry_keepalives == 0 {
            return Err(invalid("expiry_keepalives", "must be at least 1"));
        }
        if self.max_gateways == 0 || self.max_gateways > crate::forward::table::MAX_FANOUT {
            return Err(invalid(
                "max_gateways",
                format!("must be 1..={}", crate::forward::table::MAX_FANOUT),
            ));
        }
        if self.first_gateway_node_id == 0 {
            return Err(invalid("first_gateway_node_id", "0 is reserved"));
        }
        ShortIdRange::new(self.short_id_first, self.short_id_count)
            .map_err(|e| invalid("short_id_count", e.to_string()))?;
        if self.repair_cache_fragments == 0 || self.repair_cache_bytes < 1232 {
            return Err(invalid(
                "repair_cache_bytes",
                "the repair cache needs at least 1 fragment and 1232 bytes",
            ));
        }
        Ok(())
    }

    /// The resolved settings (after [`ControlConfig::validate`]), without a roster.
    pub fn settings(&self) -> Result<ControlSettings, ConfigError> {
        self.settings_with_roster(None)
    }

    /// The resolved settings with the deployment's verified roster: unless `gateways` lists
    /// keys (or `allow_any_gateway` is set), the allow list is the roster's gateways; the
    /// relay's short-ID range is its roster range ([`crate::control::Control::new`]).
    pub fn settings_with_roster(
        &self,
        roster: Option<Arc<Roster>>,
    ) -> Result<ControlSettings, ConfigError> {
        self.validate()?;
        let short_ids = ShortIdRange::new(self.short_id_first, self.short_id_count)
            .map_err(|e| invalid("short_id_count", e.to_string()))?;
        let allow_from_roster =
            roster.is_some() && !self.allow_any_gateway && self.gateways.is_empty();
        let allowed_gateways = match (&roster, self.allow_any_gateway) {
            (_, true) => None,
            (Some(r), false) if self.gateways.is_empty() => {
                Some(r.gateways().map(|k| k.0).collect())
            }
            _ => Some(self.gateways.iter().map(|k| k.0).collect()),
        };
        Ok(ControlSettings {
            allowed_gateways,
            roster,
            allow_from_roster,
            register_window_ms: self.register_window_ms,
            keepalive_ms: self.keepalive_ms,
            expiry_keepalives: self.expiry_keepalives,
            max_gateways: self.max_gateways,
            first_gateway_node_id: self.first_gateway_node_id,
            short_ids,
            on_exhaustion: if self.short_id_wrap {
                OnExhaustion::Wrap
            } else {
                OnExhaustion::Fail
            },
            repair_cache_fragments: self.repair_cache_fragments,
            repair_cache_bytes: self.repair_cache_bytes,
            tx_cache_bytes: self.tx_cache_bytes,
            tx_answer_repeat_ms: self.tx_answer_repeat_ms,
            ..ControlSettings::default()
        })
    }
}

/// What the control path runs with.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Gateway identities allowed to register; `None`: anyone with a valid signature.
    pub allowed_gateways: Option<HashSet<[u8; 32]>>,
    /// The deployment's verified roster, if one is configured.
    pub roster: Option<Arc<Roster>>,
    /// `allowed_gateways` are the roster's gateways (no list in the config): a newer roster
    /// replaces them.
    pub allow_from_roster: bool,
    pub register_window_ms: u64,
    pub keepalive_ms: u32,
    pub expiry_keepalives: u32,
    pub max_gateways: usize,
    pub first_gateway_node_id: u32,
    pub short_ids: ShortIdRange,
    pub on_exhaustion: OnExhaustion,
    pub repair_cache_fragments: usize,
    pub repair_cache_bytes: usize,
    /// Bound of the transaction cache that answers tx requests (0: pass every request on).
    pub tx_cache_bytes: usize,
    /// A tx request for an ID served to the same node within this many ms is refused.
    pub tx_answer_repeat_ms: u64,
    /// Registration nonces remembered at most (a full replay cache refuses registrations as
    /// busy rather than forget a nonce still inside the window).
    pub replay_cache: usize,
    /// Transactions (origin node, transfer) remembered, so every fragment of one transaction
    /// gets the same short ID and relay transfer id.
    pub tx_memory: usize,
    /// Key-release streams remembered, so a key release that reaches the relay twice (two
    /// paths) is passed on once.
    pub key_release_memory: usize,
}

impl Default for ControlSettings {
    /// The `ControlConfig` defaults, with any gateway allowed (tests, testbeds).
    fn default() -> Self {
        ControlSettings {
            allowed_gateways: None,
            roster: None,
            allow_from_roster: false,
            register_window_ms: 30_000,
            keepalive_ms: 5_000,
            expiry_keepalives: 3,
            max_gateways: 256,
            first_gateway_node_id: 1000,
            short_ids: ShortIdRange::for_relay(0, 16).unwrap_or_else(|_| unreachable_range()),
            on_exhaustion: OnExhaustion::Wrap,
            repair_cache_fragments: 65_536,
            repair_cache_bytes: 64 << 20,
            tx_cache_bytes: 32 << 20,
            tx_answer_repeat_ms: 400,
            replay_cache: 65_536,
            tx_memory: 16_384,
            key_release_memory: 4_096,
        }
    }
}

// `for_relay(0, 16)` cannot fail (0 < 16); this keeps the Default free of `unwrap`.
fn unreachable_range() -> ShortIdRange {
    match ShortIdRange::new(0, 1) {
        Ok(r) => r,
        Err(_) => unreachable!("a one-ID range at 0 is valid"),
    }
}
