//! The DPDK repair cache end to end on net_ring ethdevs: the pipeline core forwards a fragment
//! and hands a zero-copy reference to the control core over its repair ring; a repair request
//! for it is answered by the control core from the cache, flagged RETRANSMIT, out through the
//! pipeline core's TX; after shutdown every pool is back to its baseline. The control core
//! also writes the fragment's stage record (`relay`, from the repair note).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use photon_dpdk::{lcore, MbufBatch, Ring, RxQueue, TxQueue};
use photon_protocol::wire::{
    flags, FragmentKind, Message, Packet, RepairRequestRepr, Repr, MAX_DATAGRAM,
};
use photon_relay::control::{ControlCounter, ControlShared};
use photon_relay::dpdk::dataplane::ControlLink;
use photon_relay::dpdk::pipeline::{Pipeline, PipelineParts, PortIo};
use photon_relay::forward::dedup::Dedup;
use photon_relay::forward::publish;
use photon_relay::forward::table::Table;
use photon_relay::ops::counters::{CoreCounters, Counter};
use photon_relay::ops::stages::StageLog;
use smoltcp::wire::{EthernetFrame, Ipv4Packet, UdpPacket};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The Photon datagram inside a frame the relay sent.
fn photon_of(frame: &[u8]) -> Vec<u8> {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    UdpPacket::new_checked(ip.payload())
        .unwrap()
        .payload()
        .to_vec()
}

#[test]
fn forwarded_fragment_is_served_from_the_control_cores_repair_cache() {
    let eal = eal();
    let rx_pool = pool(1024, photon_dpdk::Mempool::DEFAULT_DATA_ROOM);
    let header_pool = pool(1024, 256);
    let ctl_pool = pool(64, photon_dpdk::Mempool::DEFAULT_DATA_ROOM);
    let base = (rx_pool.in_use(), header_pool.in_use(), ctl_pool.in_use());
    let start = |name: &str| ring_port(name, &rx_pool);
    let (_a, a_rx, mut a_tx) = start(&unique("net_ring_rin"));
    let (_b, mut b_rx, b_tx) = start(&unique("net_ring_rout"));

    let (to_control, from_core) = Ring::create(eal, &unique("ctl"), 256).unwrap();
    let (to_wire, from_control) = Ring::create(eal, &unique("wire"), 256).unwrap();
    let (to_repair, repair_notes) = Ring::create(eal, &unique("rep"), 256).unwrap();
    let tables = publish::channel(Table::empty(local_spec()));
    let counters = Arc::new(CoreCounters::default());
    let parts = PipelineParts {
        ports: vec![PortIo {
            rx: a_rx,
            tx: b_tx,
            from_control: Some(from_control),
        }],
        header_pool,
        table: tables.reader(),
        dedup: Arc::new(Dedup::new(4096, [5, 6])),
        to_control,
        counters: counters.clone(),
        drain_tsc: photon_dpdk::tsc_hz(eal) / 10_000,
    };
    // Peers 2 and 3 with static hop keys; the control core publishes the table at start.
    let (mut control, _) = control_path(vec![peer(2), peer(3)]);
    let mut link = ControlLink {
        from_cores: vec![from_core],
        repair_notes: vec![repair_notes],
        tsc_hz: photon_dpdk::tsc_hz(eal),
        to_ports: vec![to_wire],
        tables,
        pool: ctl_pool,
        local: local_spec(),
        unresolved_peers: Vec::new(),
    };
    let quit = Arc::new(AtomicBool::new(false));
    let q = quit.clone();
    let core = *lcore::available_cores().last().unwrap();
    let worker = lcore::spawn(eal, core, "relay-repair", move |_| {
        let mut p: Pipeline<RxQueue, TxQueue> = Pipeline::new(parts).with_repair_ring(to_repair);
        p.run(&q);
        p.counters().clone()
    })
    .unwrap();

    let send = |tx: &mut TxQueue, frame: &[u8]| send_frame(&rx_pool, tx, frame);
    let receive = receive_frames;

    let ctl_quit = AtomicBool::new(false);
    let shared = ControlShared::new();
    let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let stage_path = photon_relay::testkit::stage_log_path("dpdk");
    let mut stages = StageLog::open(&stage_path, "relay1").unwrap();
    let before = photon_relay::ops::stages::unix_ns();
    let cached_in_use = std::thread::scope(|s| {
        let driver = s.spawn(|| {
            photon_relay::dpdk::control_core::run_with_stages(
                &mut link,
                &mut control,
                &shared,
                &ctl_quit,
                Duration::from_millis(5),
                Some(&mut stages),
            )
        });
        wait_until("the table on the core", || counters.table_generation() > 0);

        // Peer 2 sends a fragment: forwarded to 3, and its reference reaches the cache.
        send(&mut a_tx, &fragment(2, 0x77, 4, &payload));
        let out = receive(&mut b_rx, 1);
        assert_eq!(out.len(), 1, "forwarded");
        check_copy(3, &out[0], &payload);
        wait_until("the fragment in the repair cache", || shared.cache().0 == 1);
        let cached_in_use = (rx_pool.in_use(), header_pool.in_use());

        // Peer 3 lost it and asks again; index 5 was never seen, so it is asked of the
        // stream's origin, gateway 2 (its prefix: the test gateways' streams are below 2^32).
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = Repr::new(
            3,
            Message::RepairRequest(RepairRequestRepr::new(
                0x77,
                FragmentKind::Source,
                vec![4, 5],
            )),
        )
        .emit(&mut buf)
        .unwrap();
        keys_of(3).recv.sign_header(&mut buf[..n]).unwrap();
        send(&mut a_tx, &udp_frame(3, &buf[..n]));
        let mut out = receive(&mut b_rx, 2);
        assert_eq!(
            out.len(),
            2,
            "the retransmission and the request to the origin"
        );
        out.sort_by_key(|f| EthernetFrame::new_checked(&f[..]).unwrap().dst_addr().0);
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!(eth.dst_addr().0, peer_mac(2));
        let d = photon_of(&out[0]);
        let p = Packet::new_checked(&d[..]).unwrap();
        let Ok(Repr {
            message: Message::RepairRequest(asked),
            ..
        }) = Repr::parse(&p)
        else {
            panic!("a repair request to the origin");
        };
        assert_eq!((asked.stream, asked.missing), (0x77, vec![5]));
        assert!(keys_of(2).send.verify(&d), "under the relay → 2 hop key");
        let eth = EthernetFrame::new_checked(&out[1][..]).unwrap();
        assert_eq!(eth.dst_addr().0, peer_mac(3));
        let d = photon_of(&out[1]);
        let p = Packet::new_checked(&d[..]).unwrap();
        assert_eq!(p.flags() & flags::RETRANSMIT, flags::RETRANSMIT);
        assert_eq!((p.sender(), p.stream(), p.index()), (RELAY_ID, 0x77, 4));
        assert_eq!(p.payload(), &payload[..]);
        assert!(keys_of(3).send.verify(&d), "under the relay → 3 hop key");

        wait_until("the miss counted", || {
            shared.get(ControlCounter::RepairMissed) == 1
        });
        assert_eq!(shared.get(ControlCounter::RepairServed), 1);
        assert_eq!(shared.get(ControlCounter::ToOrigin), 1);
        ctl_quit.store(true, Ordering::Relaxed);
        let drops = driver.join().unwrap();
        assert_eq!(
            drops,
            photon_relay::dpdk::control_core::DriverDrops::default()
        );
        cached_in_use
    });
    // The fragment's repair note carried its data core's poll TSC: one `relay` record for its stream, written
    // when the driver stopped (with the stream's `relay_last`).
    let after = photon_relay::ops::stages::unix_ns();
    drop(stages);
    let text = std::fs::read_to_string(&stage_path).unwrap();
    let _ = std::fs::remove_file(&stage_path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("{\"t_ns\":")
            && lines[0].ends_with(",\"node\":\"relay1\",\"stage\":\"relay\",\"stream\":119}"),
        "{text}"
    );
    let t: u64 = lines[0]["{\"t_ns\":".len()..lines[0].find(',').unwrap()]
        .parse()
        .unwrap();
    assert!(before <= t && t <= after, "{t} not in {before}..={after}");
    let datagram = photon_protocol::wire::HEADER_LEN + payload.len();
    assert!(
        lines[1].ends_with(&format!(
            "\"stage\":\"relay_last\",\"stream\":119,\"bytes\":{datagram}}}"
        )),
        "{text}"
    );
    quit.store(true, Ordering::Relaxed);
    let finals = worker.join().unwrap().unwrap();
    assert_eq!(finals.get(Counter::ToRepairCache), 1);
    assert_eq!(finals.get(Counter::Fragments), 1);

    // The cache holds one RX buffer and one header mbuf until the control path goes.
    assert_eq!(cached_in_use, (base.0 + 1, base.1 + 1));
    assert_eq!(control.cache().len(), 1);
    drop(control);
    drop(link);
    let mut b = MbufBatch::new();
    while b_rx.rx_burst(&mut b) > 0 {
        b.clear();
    }
    assert_eq!(
        (rx_pool.in_use(), header_pool.in_use(), ctl_pool.in_use()),
        base,
        "every mbuf back after shutdown"
    );
}
