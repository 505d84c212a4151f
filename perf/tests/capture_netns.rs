//! Captures recorded from real traffic, as operators make them: two network namespaces of this
//! test's own joined by a veth pair carrying IPv6 and IPv4; an emulated node (`photon-perf
//! emunode`) listening on each address, on ports other than 8333, and a client sending a
//! Bitcoin conversation to each (bash's `/dev/tcp`), which the node answers (its handshake,
//! `getdata`). Recorded at once by `tcpdump -i any -y LINUX_SLL2` (Linux cooked v2) and by
//! `tcpdump -i <veth>` (Ethernet), and both merged into one pcapng of two interfaces. Each is
//! read back with every message.
//!
//! VLAN: the kernel this was written on has no 802.1Q support (no `vlan` link type, no
//! modules), so the veth capture's frames are also rewritten with an 802.1Q tag inserted
//! after the MAC addresses (what a trunk port's capture shows) and read back; frames built
//! with VLAN tags from scratch are in capture_formats.rs.
//!
//! Needs root, `ip` (iproute2), tcpdump and bash: without them the test fails, naming what is
//! missing. The namespaces are removed at the end, also on failure. About 5 s.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bitcoin::p2p::message::NetworkMessage;
use common::*;
use pcap_parser::Linktype;
use photon_perf::capture_feed::{CaptureFeed, FeedConfig};
use photon_perf::replay::write::{pcap_bytes, pcapng_bytes, read_pcap_packets, Packet};
use photon_perf::replay::{read_capture_all, CapturedMessage, TcpConfig};

/// The namespaces and the processes started in them; the processes are killed and the
/// namespaces removed on drop (also when an assertion fails).
struct Netns {
    a: String,
    b: String,
    children: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("this test needs {} (iproute2): {e}", args[0]));
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn netns(prefix: &str) -> Netns {
    let ns = Netns {
        a: format!("{prefix}a"),
        b: format!("{prefix}b"),
        children: Vec::new(),
    };
    let (va, vb) = (format!("{prefix}va"), format!("{prefix}vb"));
    run(&["ip", "netns", "add", &ns.a]);
    run(&["ip", "netns", "add", &ns.b]);
    run(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    for (dev, n, last) in [(&va, &ns.a, 1), (&vb, &ns.b, 2)] {
        run(&["ip", "link", "set", dev, "netns", n]);
        let v4 = format!("10.91.0.{last}/24");
        let v6 = format!("fd91::{last}/64");
        for cmd in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "set", dev.as_str(), "up"],
            vec!["addr", "add", &v4, "dev", dev.as_str()],
            vec!["-6", "addr", "add", &v6, "dev", dev.as_str(), "nodad"],
        ] {
            let mut args = vec!["ip", "-n", n.as_str()];
            args.extend(cmd);
            run(&args);
        }
    }
    ns
}

fn tcpdump(ns: &str, args: &[&str], file: &Path) -> Child {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-U",
            "--immediate-mode",
            "-n",
            "-B",
            "8192",
        ])
        .args(args)
        .arg("-w")
        .arg(file)
        .arg("tcp")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs ip and tcpdump: {e}"));
    await_tcpdump(&mut child, "this test needs tcpdump able to capture (root)");
    child
}

fn stop(child: &mut Child) {
    stop_tcpdump(child);
}

/// The packets of a pcap file, as pcapng packets of `interface`.
fn packets(file: &Path, interface: u32) -> (Linktype, Vec<Packet>) {
    let (lt, mut p) = read_pcap_packets(&std::fs::read(file).unwrap()).unwrap();
    p.iter_mut().for_each(|p| p.interface = interface);
    (lt, p)
}

/// The client's messages on the flow to `server`, in order.
fn to(msgs: &[CapturedMessage], server: SocketAddr) -> Vec<NetworkMessage> {
    msgs.iter()
        .filter(|m| m.flow.dst == server)
        .map(|m| m.message.clone())
        .collect()
}

/// The node's answers on the flow from `server`.
fn from(msgs: &[CapturedMessage], server: SocketAddr) -> Vec<&'static str> {
    msgs.iter()
        .filter(|m| m.flow.src == server)
        .map(|m| m.message.cmd())
        .collect()
}

#[test]
fn sll2_vlan_ipv6_and_two_interfaces_from_real_traffic() {
    let prefix = format!("pcn{}", std::process::id() % 100_000);
    let dir: PathBuf = std::env::temp_dir().join(format!("photon-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ns = netns(&prefix);
    let v6: SocketAddr = "[fd91::2]:18444".parse().unwrap();
    let v4: SocketAddr = "10.91.0.2:28333".parse().unwrap();
    let stop_file = dir.join("stop");
    for (i, addr) in [v6, v4].iter().enumerate() {
        ns.children.push(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.b,
                    env!("CARGO_BIN_EXE_photon-perf"),
                    "emunode",
                ])
                .args(["--name", &format!("n{i}"), "--listen", &addr.to_string()])
                .arg("--records")
                .arg(dir.join(format!("n{i}.jsonl")))
                .arg("--stop-file")
                .arg(&stop_file)
                .args(["--max-seconds", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("photon-perf emunode"),
        );
    }
    let any = dir.join("any.pcap");
    let eth = dir.join("eth.pcap");
    // Held by the guard too: a failed assertion must not leave them capturing.
    ns.children
        .push(tcpdump(&ns.a, &["-i", "any", "-y", "LINUX_SLL2"], &any));
    ns.children
        .push(tcpdump(&ns.a, &["-i", &format!("{prefix}va")], &eth));

    let b = block(227836);
    let convo = conversation(7, &b);
    let conv_file = dir.join("conversation.bin");
    std::fs::write(&conv_file, wire(&convo)).unwrap();
    for addr in [v6, v4] {
        // Connect (retrying while the node starts), send, read the answers for a moment.
        let script = format!(
            "for i in $(seq 50); do exec 3<>/dev/tcp/{}/{} && break; sleep 0.1; done; \
             cat {} >&3; timeout 1 cat <&3 >/dev/null; exec 3>&-",
            addr.ip(),
            addr.port(),
            conv_file.display()
        );
        let st = Command::new("ip")
            .args(["netns", "exec", &ns.a, "bash", "-c", &script])
            .status()
            .expect("this test needs bash");
        assert!(st.success(), "client to {addr}");
    }
    std::thread::sleep(Duration::from_millis(300));
    for dump in ns.children.iter_mut().skip(2) {
        stop(dump);
    }
    std::fs::write(&stop_file, b"").unwrap();
    for n in ns.children.iter_mut().take(2) {
        let _ = n.wait();
    }

    // The node answers with its handshake and getdata; of that only its version is kept.
    let check = |msgs: &[CapturedMessage], what: &str| {
        assert!(!msgs.is_empty(), "{what}: no messages");
        for server in [v6, v4] {
            assert_eq!(to(msgs, server), kept(&convo), "{what}: client to {server}");
            assert_eq!(
                from(msgs, server),
                ["version"],
                "{what}: {server}'s answers"
            );
        }
    };

    // tcpdump -i any: Linux cooked v2, both conversations.
    let (lt, any_packets) = packets(&any, 0);
    assert_eq!(lt, Linktype::LINUX_SLL2);
    let (msgs, stats) = read_capture_all(&any, TcpConfig::default()).unwrap();
    check(&msgs, "any (SLL2)");
    assert_eq!(stats.tcp.holes_skipped, 0);

    // tcpdump -i veth: Ethernet.
    let (lt, eth_packets) = packets(&eth, 1);
    assert_eq!(lt, Linktype::ETHERNET);
    let (msgs, _) = read_capture_all(&eth, TcpConfig::default()).unwrap();
    check(&msgs, "veth (Ethernet)");

    // The same frames with an 802.1Q tag (VLAN 100) after the MAC addresses.
    let tagged: Vec<Packet> = eth_packets
        .iter()
        .map(|p| {
            let mut data = p.data[..12].to_vec();
            data.extend([0x81, 0x00, 0x00, 100]);
            data.extend(&p.data[12..]);
            Packet {
                interface: 0,
                ts_ns: p.ts_ns,
                data,
            }
        })
        .collect();
    let vlan = dir.join("vlan.pcap");
    std::fs::write(&vlan, pcap_bytes(Linktype::ETHERNET, &tagged).unwrap()).unwrap();
    let (msgs, stats) = read_capture_all(&vlan, TcpConfig::default()).unwrap();
    check(&msgs, "veth frames with a VLAN tag");
    assert_eq!(stats.malformed + stats.non_ip, 0);

    // Both in one pcapng, two interfaces of different link types: every message once per
    // direction on each interface (an interface is its own vantage point: flows are keyed by
    // it), and the tx and block the two conversations share (4 copies) replayed once.
    let mut all = any_packets;
    all.extend(eth_packets);
    all.sort_by_key(|p| p.ts_ns);
    let ng = dir.join("both.pcapng");
    std::fs::write(
        &ng,
        pcapng_bytes(&[Linktype::LINUX_SLL2, Linktype::ETHERNET], &all).unwrap(),
    )
    .unwrap();
    let (msgs, stats) = read_capture_all(&ng, TcpConfig::default()).unwrap();
    assert_eq!(stats.format, "pcapng");
    for i in [0, 1] {
        let on: Vec<CapturedMessage> = msgs
            .iter()
            .filter(|m| m.flow.interface == i)
            .cloned()
            .collect();
        check(&on, &format!("pcapng of both, interface {i}"));
    }
    let (events, summary) = CaptureFeed::collect(&ng, FeedConfig::default()).unwrap();
    let c = &summary.counts;
    assert_eq!(
        (c.tx_found, c.tx_replayed, c.tx_duplicates),
        (4, 1, 3),
        "{c:?}"
    );
    assert_eq!(
        (c.blocks_found, c.blocks_replayed, c.block_duplicates),
        (4, 1, 3),
        "{c:?}"
    );
    assert_eq!(events.len(), 2);
    assert_eq!(c.connections, 4);
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}
