//! Roster files (`photon_protocol::roster`) for both binaries: the operator's TOML spec that
//! `photon-gateway roster create` turns into a roster, signing, inspecting and verifying roster
//! files, and the `[roster]` config section relays and gateways load theirs with.
//!
//! A roster file holds the roster's wire form (binary, `Roster::emit`), the same bytes a node
//! would accept in-band; `roster inspect` prints it as text.

use std::path::{Path, PathBuf};

use photon_protocol::identity::{Identity, PublicKey};
use photon_protocol::roster::{Member, MemberRole, Roster, RosterTrust};
use photon_protocol::shortid::ShortIdRange;
use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// The operator's description of a roster (`roster create --spec FILE`):
///
/// ```toml
/// serial = 3
/// expires_unix_s = 1900000000
/// [[gateway]]
/// key = "<64 hex digits>"
/// [[relay]]
/// key = "<64 hex digits>"
/// short_id_first = 0
/// short_id_count = 134217728
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterSpec {
    pub serial: u64,
    pub expires_unix_s: u64,
    #[serde(default)]
    pub gateway: Vec<GatewaySpec>,
    #[serde(default)]
    pub relay: Vec<RelaySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    pub key: PublicKey,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    pub key: PublicKey,
    pub short_id_first: u32,
    pub short_id_count: u64,
}

impl RosterSpec {
    /// The unsigned roster this spec describes (gateways first, then relays).
    pub fn roster(&self) -> Result<Roster, ConfigError> {
        let mut members: Vec<Member> = self
            .gateway
            .iter()
            .map(|g| Member {
                key: g.key,
                role: MemberRole::Gateway,
            })
            .collect();
        for (i, r) in self.relay.iter().enumerate() {
            let short_ids = ShortIdRange::new(r.short_id_first, r.short_id_count)
                .map_err(|e| invalid(format!("relay[{i}].short_id_count"), e.to_string()))?;
            members.push(Member {
                key: r.key,
                role: MemberRole::Relay { short_ids },
            });
        }
        Roster::new(self.serial, self.expires_unix_s, members)
            .map_err(|e| invalid("gateway/relay", e.to_string()))
    }
}

/// `[roster]` of a relay's or gateway's config. Without `file`, the node runs without a
/// roster (its allow lists and trusted origins come from the rest of the config).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RosterSection {
    /// The signed roster (`photon-gateway roster create`/`sign`), relative to the config.
    pub file: Option<PathBuf>,
    /// The deployment operators' public keys (64 hex digits each): the only keys whose
    /// signatures make a roster valid.
    pub operators: Vec<PublicKey>,
    /// Distinct operator signatures a roster needs (default 1).
    pub threshold: Option<usize>,
}

impl RosterSection {
    /// The trust anchor of this section.
    pub fn trust(&self) -> RosterTrust {
        RosterTrust {
            operators: self.operators.clone(),
            threshold: self.threshold.unwrap_or(1).max(1),
        }
    }

    /// Loads and verifies the roster named by `file` (relative to `base`), at `now_unix_s`;
    /// `None` when no file is configured. Errors name the key to change.
    pub fn load(&self, base: &Path, now_unix_s: u64) -> Result<Option<Roster>, ConfigError> {
        let Some(file) = &self.file else {
            if !self.operators.is_empty() {
                return Err(invalid(
                    "roster.file",
                    "operators are configured but no roster file: set roster.file",
                ));
            }
            return Ok(None);
        };
        if self.operators.is_empty() {
            return Err(invalid(
                "roster.operators",
                "a roster file needs the operator keys that sign it",
            ));
        }
        if self.threshold == Some(0) || self.threshold.unwrap_or(1) > self.operators.len() {
            return Err(invalid(
                "roster.threshold",
                format!(
                    "must be 1..={} (the operators listed)",
                    self.operators.len()
                ),
            ));
        }
        let path = base.join(file);
        let bytes = std::fs::read(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Roster::open(&bytes, &self.trust(), now_unix_s)
            .map(Some)
            .map_err(|e| invalid("roster.file", format!("{}: {e}", path.display())))
    }
}

/// Watches a roster file for a newer roster (the operator replaces the file; nodes pick it up
/// on their housekeeping, no restart): when the file's modification time or length changed,
/// it is read and verified, and a roster that is valid and newer than the one held is
/// returned. Everything else is an error the caller counts (and logs once): the file is
/// then not read again until it changes.
#[derive(Debug, Clone)]
pub struct RosterWatcher {
    path: PathBuf,
    trust: RosterTrust,
    stamp: Option<(std::time::SystemTime, u64)>,
    current: Option<std::sync::Arc<Roster>>,
}

impl RosterWatcher {
    /// A watcher of the file of `section` (relative to `base`), holding `current` (the
    /// roster loaded at start); `None` without a configured file.
    pub fn new(
        section: &RosterSection,
        base: &Path,
        current: Option<std::sync::Arc<Roster>>,
    ) -> Option<RosterWatcher> {
        let path = base.join(section.file.as_ref()?);
        let stamp = Self::stamp_of(&path);
        Some(RosterWatcher {
            path,
            trust: section.trust(),
            stamp,
            current,
        })
    }

    fn stamp_of(path: &Path) -> Option<(std::time::SystemTime, u64)> {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    /// `None` while the file is unchanged; else the newer roster, or why the new file was
    /// refused (expired, badly signed, not newer, unreadable).
    pub fn poll(&mut self, now_unix_s: u64) -> Option<Result<std::sync::Arc<Roster>, String>> {
        let stamp = Self::stamp_of(&self.path);
        if stamp == self.stamp {
            return None;
        }
        self.stamp = stamp;
        let checked = std::fs::read(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))
            .and_then(|bytes| {
                let r = Roster::open(&bytes, &self.trust, now_unix_s)
                    .map_err(|e| format!("{}: {e}", self.path.display()))?;
                if let Some(c) = &self.current {
                    r.check_replaces(c)
                        .map_err(|e| format!("{}: {e}", self.path.display()))?;
                }
                Ok(std::sync::Arc::new(r))
            });
        if let Ok(r) = &checked {
            self.current = Some(std::sync::Arc::clone(r));
        }
        Some(checked)
    }
}

/// Seconds since the Unix epoch on the wall clock (0 if the clock is before 1970).
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `roster create`: the unsigned roster of the spec file at `spec`, written to `out`.
pub fn create(spec: &Path, out: &Path) -> Result<Roster, String> {
    let spec: RosterSpec = crate::config::load(spec).map_err(|e| e.to_string())?;
    let roster = spec.roster().map_err(|e| e.to_string())?;
    write(out, &roster)?;
    Ok(roster)
}

/// `roster sign`: adds the signature of the operator identity `key` to the roster file.
pub fn sign(file: &Path, key: &Path) -> Result<Roster, String> {
    let mut roster = read(file)?;
    let operator: Identity = crate::keys::load(key, "--key", "photon-gateway")?;
    roster.sign(&operator).map_err(|e| e.to_string())?;
    write(file, &roster)?;
    Ok(roster)
}

/// Reads and parses (no trust check) a roster file.
pub fn read(file: &Path) -> Result<Roster, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    Roster::parse(&bytes).map_err(|e| format!("{}: {e}", file.display()))
}

fn write(file: &Path, roster: &Roster) -> Result<(), String> {
    std::fs::write(file, roster.emit()).map_err(|e| format!("{}: {e}", file.display()))
}

/// `roster inspect`: the roster as text (TOML in the spec's shape, signatures as comments).
pub fn describe(roster: &Roster) -> String {
    let mut s = format!(
        "serial = {}\nexpires_unix_s = {}\n",
        roster.serial, roster.expires_unix_s
    );
    for m in &roster.members {
        match m.role {
            MemberRole::Gateway => s.push_str(&format!("\n[[gateway]]\nkey = \"{}\"\n", m.key)),
            MemberRole::Relay { short_ids } => s.push_str(&format!(
                "\n[[relay]]\nkey = \"{}\"\nshort_id_first = {}\nshort_id_count = {}\n",
                m.key,
                short_ids.first(),
                short_ids.len()
            )),
        }
    }
    s.push('\n');
    for sig in &roster.signatures {
        s.push_str(&format!("# signed by operator {}\n", sig.operator));
    }
    if roster.signatures.is_empty() {
        s.push_str("# unsigned\n");
    }
    s
}

/// `roster verify`: the roster file checked against `operators` (threshold `threshold`) at
/// `now_unix_s`, and, with `current`, as a replacement of that roster file.
pub fn verify(
    file: &Path,
    operators: &[PublicKey],
    threshold: usize,
    now_unix_s: u64,
    current: Option<&Path>,
) -> Result<Roster, String> {
    let roster = read(file)?;
    let trust = RosterTrust {
        operators: operators.to_vec(),
        threshold,
    };
    roster
        .verify(&trust, now_unix_s)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if let Some(c) = current {
        roster
            .check_replaces(&read(c)?)
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(roster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn create_sign_inspect_verify_load() {
        let dir = std::env::temp_dir().join(format!("photon-roster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = Identity::generate(&SystemRandom::new())
            .unwrap()
            .public_key();
        let r = Identity::generate(&SystemRandom::new())
            .unwrap()
            .public_key();
        let spec = dir.join("spec.toml");
        std::fs::write(
            &spec,
            format!(
                "serial = 2\nexpires_unix_s = 4000000000\n[[gateway]]\nkey = \"{g}\"\n\
                 [[relay]]\nkey = \"{r}\"\nshort_id_first = 16\nshort_id_count = 16\n"
            ),
        )
        .unwrap();
        let file = dir.join("deploy.roster");
        create(&spec, &file).unwrap();
        let op_key = dir.join("op.key");
        let op = crate::keys::keygen(&op_key, true).unwrap();
        assert!(verify(&file, &[op], 1, 0, None).is_err(), "unsigned");
        sign(&file, &op_key).unwrap();
        let roster = verify(&file, &[op], 1, 0, None).unwrap();
        assert!(roster.is_gateway(&g));
        assert_eq!(roster.relay_range(&r).unwrap().first(), 16);
        let text = describe(&roster);
        let back: RosterSpec = toml::from_str(&text).unwrap();
        assert_eq!(back.roster().unwrap().members, roster.members);
        assert!(
            verify(&file, &[op], 1, 4_000_000_000, None).is_err(),
            "expired"
        );
        assert!(
            verify(&file, &[op], 1, 0, Some(&file)).is_err(),
            "same serial"
        );

        let section = RosterSection {
            file: Some("deploy.roster".into()),
            operators: vec![op],
            threshold: None,
        };
        assert_eq!(section.load(&dir, 0).unwrap(), Some(roster));
        let e = RosterSection {
            operators: vec![],
            ..section.clone()
        }
        .load(&dir, 0)
        .unwrap_err();
        assert!(e.to_string().contains("roster.operators"), "{e}");
        let e = RosterSection {
            operators: vec![g],
            ..section.clone()
        }
        .load(&dir, 0)
        .unwrap_err();
        assert!(e.to_string().contains("roster.file"), "{e}");
        assert_eq!(RosterSection::default().load(&dir, 0).unwrap(), None);

        // A watcher: nothing while the file is unchanged; a newer signed roster is taken, an
        // older one (or a badly signed one) refused.
        let current = section.load(&dir, 0).unwrap().map(std::sync::Arc::new);
        let mut w = RosterWatcher::new(&section, &dir, current).unwrap();
        assert!(w.poll(0).is_none());
        let write = |serial: u64, signer: &Path| {
            let mut spec_v: RosterSpec = crate::config::load(&spec).unwrap();
            spec_v.serial = serial;
            std::fs::write(&file, spec_v.roster().unwrap().emit()).unwrap();
            sign(&file, signer).unwrap();
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(3, &op_key);
        let got = w.poll(0).expect("changed").unwrap();
        assert_eq!(got.serial, 3);
        assert!(w.poll(0).is_none());
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(1, &op_key);
        let e = w.poll(0).expect("changed").unwrap_err();
        assert!(e.contains("not newer"), "{e}");
        let other_key = dir.join("other.key");
        crate::keys::keygen(&other_key, true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(9, &other_key);
        let e = w.poll(0).expect("changed").unwrap_err();
        assert!(e.contains("valid signatures"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
