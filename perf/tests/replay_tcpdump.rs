//! Replay input A on a real capture: tcpdump records loopback traffic (two Bitcoin
//! connections, one of random bytes, some UDP), read as pcap and as the same packets rewritten
//! as pcapng. Alone in its test binary: on a loaded 2-core machine, tests running beside it
//! starved tcpdump into dropping packets. Fails, naming what is missing, where tcpdump cannot capture.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bitcoin::Block;
use common::*;
use photon_perf::replay::{
    pcap_to_pcapng, read_capture, read_capture_all, CapturedMessage, TcpConfig,
};

/// Records loopback traffic with tcpdump: two Bitcoin connections, one connection of random
/// bytes and some UDP, all to one port. `None` (with the reason printed) where tcpdump cannot
/// capture here.
fn record_loopback(dir: &Path, b: &Block) -> Option<PathBuf> {
    let listener = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = listener.local_addr().ok()?.port();
    let file = dir.join("lo.pcap");
    let mut dump = match tcpdump_on_lo()
        .args(["--time-stamp-precision", "nano", "-w"])
        .arg(&file)
        .arg(format!("port {port}"))
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("live capture cannot run: no tcpdump ({e}; scripts/setup.sh installs it)"),
    };
    // tcpdump says "listening on lo" once it captures.
    let mut err = BufReader::new(dump.stderr.take()?);
    let mut line = String::new();
    let _ = err.read_line(&mut line);
    if !line.contains("listening on") {
        let _ = dump.kill();
        let _ = dump.wait();
        panic!("live capture cannot run: tcpdump said: {}", line.trim());
    }
    let server = std::thread::spawn(move || {
        // Read every connection to its end (the receiver of the Bitcoin traffic).
        let mut handles = Vec::new();
        for _ in 0..3 {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            handles.push(std::thread::spawn(move || {
                let _ = std::io::copy(&mut s, &mut std::io::sink());
            }));
        }
        for h in handles {
            let _ = h.join();
        }
    });
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    for nonce in [11u64, 22] {
        let mut s = TcpStream::connect(to).ok()?;
        // Written in pieces so the block spans many segments.
        for chunk in wire(&conversation(nonce, b)).chunks(7_000) {
            s.write_all(chunk).ok()?;
        }
    }
    let mut junk = TcpStream::connect(to).ok()?;
    let noise: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    junk.write_all(&noise).ok()?;
    drop(junk);
    let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
    for _ in 0..5 {
        let _ = udp.send_to(b"not bitcoin", to);
    }
    let _ = server.join();
    // Wait until tcpdump has written the last packets (the UDP ones; -U flushes per packet).
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match read_capture(&file, TcpConfig::default(), |_| {}) {
            Ok(s) if s.non_tcp >= 5 => break,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    // SIGTERM: tcpdump flushes and closes the file (our own child, by its pid).
    stop_tcpdump(&mut dump);
    Some(file)
}

#[test]
fn tcpdump_capture_pcap_and_pcapng() {
    let b = block(227836);
    let dir = std::env::temp_dir().join(format!("photon-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // tcpdump itself sometimes loses packets of a live capture (seen once in a full test run on
    // this 2-core machine: 40 of ~50 packets written). Record again, up to three times, until the
    // file holds everything that was sent; the assertions below then check our reader on it.
    let mut pcap = None;
    for attempt in 1..=3 {
        let file = record_loopback(&dir, &b)
            .expect("live capture: the loopback listener or tcpdump's stderr failed");
        let complete = read_capture(&file, TcpConfig::default(), |_| {}).is_ok_and(|s| {
            // Both Bitcoin connections whole (seen losing one's data segments under load),
            // the junk connection and the UDP packets.
            s.non_tcp >= 5
                && s.tcp.frames.skipped_bytes >= 50_000
                && s.kept.get("block") == Some(&2)
                && s.kept.get("version") == Some(&2)
        });
        pcap = Some(file);
        if complete {
            break;
        }
        eprintln!("capture attempt {attempt}: tcpdump lost packets; recording again");
    }
    let pcap = pcap.expect("recorded at least once");
    let (msgs, stats) = read_capture_all(&pcap, TcpConfig::default()).unwrap();
    assert_eq!(stats.format, "pcap");
    check_loopback_capture(&msgs, &b);
    assert!(stats.non_tcp >= 5, "UDP counted: {stats:?}");
    assert_eq!(stats.skipped.get("ping"), Some(&2));
    assert!(stats.tcp.flows >= 3, "3 connections: {stats:?}");
    assert_eq!(stats.tcp.mid_stream_flows, 0, "the capture saw every SYN");
    assert!(stats.tcp.frames.skipped_bytes >= 50_000, "junk skipped");

    let ng = dir.join("lo.pcapng");
    let n = pcap_to_pcapng(&pcap, &ng).unwrap();
    assert_eq!(n, stats.packets);
    let (ng_msgs, ng_stats) = read_capture_all(&ng, TcpConfig::default()).unwrap();
    assert_eq!(ng_stats.format, "pcapng");
    check_loopback_capture(&ng_msgs, &b);
    let times = |m: &[CapturedMessage]| m.iter().map(|m| m.ts_ns).collect::<Vec<_>>();
    assert_eq!(
        times(&msgs),
        times(&ng_msgs),
        "same timestamps in both formats"
    );
    if std::env::var_os("PHOTON_KEEP_CAPTURE").is_some() {
        eprintln!("kept {}", pcap.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
