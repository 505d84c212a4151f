//! The `photon-relay` binary: keygen, then `run --backend socket` with a config, `/metrics`
//! served, exit 0 on SIGTERM; errors that name what to fix.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_photon-relay");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("photon-relay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, metrics_port: u16, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[relay]
node_id = 1
ip = "127.0.0.1"
udp_port = 4433
cores = [1]

[[port]]
name = "net_ring0"
vdev = "net_ring0"

[control]
identity_file = "relay.key"
allow_any_gateway = true

[socket]
bind = "127.0.0.1:0"
tick_ms = 20

[metrics]
listen = "127.0.0.1:{metrics_port}"

[log]
format = "json"
{extra}
"#
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn keygen_then_run_serves_metrics_and_exits_0_on_sigterm() {
    let dir = temp_dir("run");
    let key = dir.join("relay.key");
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stdout).unwrap();
    assert_eq!(public.trim().len(), 64, "prints the public key in hex");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "does not overwrite without --force"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let port = free_tcp_port();
    let cfg = config(&dir, port, "");
    let mut child = Command::new(BIN)
        .args(["run", "--backend", "socket", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut body = None;
    for _ in 0..250 {
        if let Some(b) = get(port, "/metrics") {
            body = Some(b);
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = body.expect("the relay serves /metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("photon_relay_rx_packets_total{core=\"0\"} 0"),
        "{body}"
    );
    assert!(body.contains("photon_relay_gateways 0"), "{body}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "exit status {status:?}, stderr:\n{stderr}"
    );
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    assert!(stderr.contains(public.trim()), "logs the public key");
    let secret = std::fs::read(&key).unwrap();
    let secret_hex: String = secret[16..48].iter().map(|b| format!("{b:02x}")).collect();
    assert!(!stderr.contains(&secret_hex), "never logs the secret");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_errors_name_what_to_fix() {
    let dir = temp_dir("errors");
    let run = |cfg: &Path| {
        let out = Command::new(BIN)
            .args(["run", "--backend", "socket", "--config"])
            .arg(cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // No key file yet.
    let cfg = config(&dir, free_tcp_port(), "");
    let e = run(&cfg);
    assert!(e.contains("identity_file") && e.contains("keygen"), "{e}");
    // Unknown key.
    let cfg = config(&dir, free_tcp_port(), "[socket2]\nbatch = 3\n");
    let e = run(&cfg);
    assert!(e.contains("socket2"), "{e}");
    // Bad value.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[socket2]\nbatch = 3\n", "")
        .replace("tick_ms = 20", "tick_ms = 20\nbatch = 1000");
    std::fs::write(&cfg, text).unwrap();
    let e = run(&cfg);
    assert!(e.contains("socket.batch") && e.contains("1000"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
