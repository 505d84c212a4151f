//! `photon-gateway roster ...`, the operator's tool, as a process: create a roster from a
//! spec, sign it, inspect it, verify it (and refuse it under the wrong operator, expired, or
//! as a replacement of itself).

use std::path::Path;
use std::process::Command;

fn gw(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_photon-gateway"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("photon-gateway runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn roster_create_sign_inspect_verify() {
    let dir = std::env::temp_dir().join(format!("photon-bin-roster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = |name: &str| {
        let (ok, out, err) = gw(&dir, &["keygen", "--out", name, "--force"]);
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let (op, g, r) = (key("op.key"), key("g.key"), key("r.key"));
    std::fs::write(
        dir.join("spec.toml"),
        format!(
            "serial = 5\nexpires_unix_s = 4000000000\n[[gateway]]\nkey = \"{g}\"\n\
             [[relay]]\nkey = \"{r}\"\nshort_id_first = 0\nshort_id_count = 1000\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = gw(
        &dir,
        &[
            "roster",
            "create",
            "--spec",
            "spec.toml",
            "--out",
            "d.roster",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, _) = gw(
        &dir,
        &[
            "roster",
            "verify",
            "--roster",
            "d.roster",
            "--operator",
            &op,
        ],
    );
    assert!(!ok, "unsigned");
    let (ok, out, err) = gw(
        &dir,
        &["roster", "sign", "--roster", "d.roster", "--key", "op.key"],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("# signed by operator {op}")), "{out}");
    let (ok, out, err) = gw(
        &dir,
        &[
            "roster",
            "verify",
            "--roster",
            "d.roster",
            "--operator",
            &op,
        ],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("# valid: serial 5, 2 members"), "{out}");
    let (ok, out, _) = gw(&dir, &["roster", "inspect", "--roster", "d.roster"]);
    assert!(
        ok && out.contains(&g) && out.contains("short_id_count = 1000"),
        "{out}"
    );
    let (ok, _, err) = gw(
        &dir,
        &["roster", "verify", "--roster", "d.roster", "--operator", &g],
    );
    assert!(!ok && err.contains("valid signatures"), "{err}");
    // Verified by the operator, but expired, or not newer than the roster in force.
    for (flag, value, why) in [
        ("--now", "4000000001", "expired"),
        ("--current", "d.roster", "not newer"),
    ] {
        let args = [
            "roster",
            "verify",
            "--roster",
            "d.roster",
            "--operator",
            &op,
            flag,
            value,
        ];
        let (ok, _, err) = gw(&dir, &args);
        assert!(!ok && err.contains(why), "{flag}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
