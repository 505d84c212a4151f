//! A real frame, sent by the kernel in one network namespace, received by DPDK's af_packet PMD
//! on the other end of a veth pair inside a second namespace.
//!
//! The test creates both namespaces itself and removes them afterwards. The DPDK side has to run
//! inside its namespace, so the test re-runs its own binary there (`ip netns exec`), with an
//! environment variable saying which role to play.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use photon_dpdk::{Eal, MbufBatch, Mempool, Port, PortConfig};

const CHILD_ENV: &str = "PHOTON_AF_PACKET_CHILD_IFACE";
const MARKER: &[u8] = b"photon-af-packet-test";

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The DPDK side, inside the namespace: start an af_packet port and wait for the marker frame.
fn child(iface: &str) {
    let vdev = format!("net_af_packet0,iface={iface}");
    let eal =
        Eal::init(&common::test_eal_args(&["--vdev", &vdev])).expect("EAL with af_packet vdev");
    let pool = Mempool::new(&eal, "afp", 1024, 0, Mempool::DEFAULT_DATA_ROOM).expect("pool");
    let id = Port::id_by_name(&eal, "net_af_packet0").expect("af_packet port");
    let (port, mut rx, _tx) = Port::start(&eal, id, &PortConfig::default(), &pool).expect("start");
    println!("READY mac={:02x?}", port.mac().expect("mac"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut batch = MbufBatch::new();
    while Instant::now() < deadline {
        rx[0].rx_burst(&mut batch);
        for m in batch.drain() {
            let d = m.data();
            if d.windows(MARKER.len()).any(|w| w == MARKER) {
                // Ethernet type IPv4 and the UDP destination port we sent to.
                assert_eq!(&d[12..14], &[0x08, 0x00], "an IPv4 frame");
                assert_eq!(u16::from_be_bytes([d[36], d[37]]), 9999, "UDP port 9999");
                println!("GOT frame of {} bytes", d.len());
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no frame with the marker arrived within 20 s");
}

#[test]
fn af_packet_receives_a_real_frame_from_another_namespace() {
    if let Ok(iface) = std::env::var(CHILD_ENV) {
        child(&iface);
        return;
    }
    let tag = std::process::id();
    let (ns_a, ns_b) = (format!("phafa{tag}"), format!("phafb{tag}"));
    if let Err(e) = ip(&["netns", "add", &ns_a]) {
        panic!("cannot create network namespaces here ({e}): the af_packet test needs root and iproute2");
    }
    let _guard = Netns(vec![ns_a.clone(), ns_b.clone()]);
    ip(&["netns", "add", &ns_b]).expect("second namespace");
    let (va, vb) = (format!("pa{tag}"), format!("pb{tag}"));
    ip(&[
        "link", "add", &va, "netns", &ns_a, "type", "veth", "peer", "name", &vb, "netns", &ns_b,
    ])
    .expect("veth pair");
    ip(&["-n", &ns_a, "addr", "add", "10.211.0.1/24", "dev", &va]).expect("address");
    ip(&["-n", &ns_a, "link", "set", &va, "up"]).expect("up a");
    ip(&["-n", &ns_b, "link", "set", &vb, "up"]).expect("up b");
    // No ARP from the DPDK side: a static neighbour lets the kernel send straight away.
    ip(&[
        "-n",
        &ns_a,
        "neigh",
        "add",
        "10.211.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        &va,
    ])
    .expect("neighbour");

    let exe = std::env::current_exe().expect("test binary path");
    let mut dpdk = Command::new("ip")
        .args(["netns", "exec", &ns_b])
        .arg(&exe)
        .args([
            "--exact",
            "af_packet_receives_a_real_frame_from_another_namespace",
            "--nocapture",
        ])
        .env(CHILD_ENV, &vb)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the DPDK side in its namespace");
    let stdout = dpdk.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push(line);
        }
        lines
    });
    // Send until the DPDK side exits (it may still be starting when the first frames go out).
    let payload = String::from_utf8_lossy(MARKER).into_owned();
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        if dpdk.try_wait().expect("wait").is_some() || Instant::now() > deadline {
            break;
        }
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_a,
                "bash",
                "-c",
                &format!("echo -n {payload} > /dev/udp/10.211.0.2/9999"),
            ])
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = dpdk.wait().expect("DPDK side exits");
    let lines = reader.join().expect("reader");
    assert!(status.success(), "the DPDK side failed: {lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("GOT frame")),
        "no frame reported: {lines:?}"
    );
}
