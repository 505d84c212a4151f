//! Identity files: `keygen` writes an Ed25519 identity (PKCS#8, mode 0600) and prints its
//! public key; [`load`] reads one back. The key bytes are never logged or printed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use photon_protocol::identity::{Identity, PublicKey};
use ring::rand::SystemRandom;

/// Creates a new identity at `out` (refuses to overwrite unless `force`); returns its public
/// key.
pub fn keygen(out: &Path, force: bool) -> Result<PublicKey, String> {
    let id = Identity::generate(&SystemRandom::new())
        .map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists: pass --force to overwrite it (the old identity is lost)",
                out.display()
            )
        } else {
            format!("cannot create {}: {e}", out.display())
        }
    })?;
    f.write_all(id.to_pkcs8_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(id.public_key())
}

/// Reads the identity at `path`, set by the config key `key`; errors say how to create one
/// with `binary keygen`.
pub fn load(path: &Path, key: &str, binary: &str) -> Result<Identity, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "{key} {}: {e} (create it with `{binary} keygen --out {}`)",
            path.display(),
            path.display()
        )
    })?;
    Identity::from_pkcs8_bytes(&bytes).map_err(|e| {
        format!(
            "{key} {}: {e} (expected the file `{binary} keygen` writes)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_that_loads_back_and_is_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("photon-ops-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("id.key");
        let _ = std::fs::remove_file(&path);
        let pk = keygen(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load(&path, "identity.key_file", "photon-x")
                .unwrap()
                .public_key(),
            pk
        );
        let e = keygen(&path, false).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        assert_ne!(keygen(&path, true).unwrap(), pk, "forced: a new key");
        std::fs::write(&path, b"not a key").unwrap();
        let e = load(&path, "identity.key_file", "photon-x").unwrap_err();
        assert!(e.contains("photon-x keygen"), "{e}");
        let e = load(
            &dir.join("missing.key"),
            "control.identity_file",
            "photon-y",
        )
        .unwrap_err();
        assert!(e.starts_with("control.identity_file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
