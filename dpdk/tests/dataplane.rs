//! The binding's data-plane pieces on virtual devices: no NIC, no hugepages.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use photon_dpdk::{
    lcore, Mbuf, MbufBatch, Mempool, Port, PortConfig, Ring, MAX_BURST, MAX_CHAINED,
};

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

fn new_pool(n: u32) -> Mempool {
    Mempool::new(
        common::eal(),
        &unique("pool"),
        n,
        0,
        Mempool::DEFAULT_DATA_ROOM,
    )
    .expect("mempool")
}

/// The bytes of a test frame: `fill`, `fill + 1`, ... (wrapping), `len` of them.
fn frame_bytes(fill: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

fn frame(pool: &Mempool, fill: u8, len: usize) -> Mbuf {
    let mut m = pool.alloc().expect("alloc");
    m.extend_from_slice(&frame_bytes(fill, len))
        .expect("append");
    m
}

/// Sends `batch` through the ring port and receives the `n` frames back.
fn through_ring(
    tx: &mut photon_dpdk::TxQueue,
    rx: &mut photon_dpdk::RxQueue,
    batch: &mut MbufBatch,
    n: usize,
) -> MbufBatch {
    assert_eq!(tx.tx_burst(batch), n);
    let mut got = MbufBatch::new();
    assert_eq!(rx.rx_burst(&mut got), n);
    got
}

/// A pool of `payload` mbufs and one of `header` mbufs, with how many of each are in use.
fn payload_and_header_pools(payload: u32, header: u32) -> (Mempool, Mempool, (u32, u32)) {
    let (pool, hdr_pool) = (new_pool(payload), new_pool(header));
    let base = (pool.in_use(), hdr_pool.in_use());
    (pool, hdr_pool, base)
}

/// A net_ring device loops TX queue i back to RX queue i.
fn ring_port(pool: &Mempool) -> (Port, photon_dpdk::RxQueue, photon_dpdk::TxQueue) {
    let eal = common::eal();
    let name = unique("net_ring_dp");
    eal.create_vdev(&name, "").expect("create net_ring vdev");
    let id = Port::id_by_name(eal, &name).expect("port by name");
    let (port, mut rx, mut tx) =
        Port::start(eal, id, &PortConfig::default(), pool).expect("start port");
    (port, rx.remove(0), tx.remove(0))
}

#[test]
fn burst_round_trip_through_net_ring() {
    let pool = new_pool(512);
    let base = pool.in_use();
    let (port, mut rx, mut tx) = ring_port(&pool);
    assert!(
        port.link().expect("link").up,
        "net_ring reports its link up"
    );

    let mut out = MbufBatch::new();
    for i in 0..MAX_BURST {
        out.push(frame(&pool, i as u8, 60 + i)).expect("room");
    }
    let sent = tx.tx_burst(&mut out);
    assert_eq!(sent, MAX_BURST);
    assert!(out.is_empty());

    let mut got = MbufBatch::new();
    let n = rx.rx_burst(&mut got);
    assert_eq!(n, MAX_BURST);
    for (i, m) in got.iter().enumerate() {
        let expect = frame_bytes(i as u8, 60 + i);
        assert_eq!(m.data(), &expect[..], "frame {i} came back byte-identical");
    }
    drop(got);
    assert_eq!(pool.in_use(), base, "every mbuf returned to the pool");
    let st = port.stats().expect("stats");
    assert_eq!(
        (st.rx_packets, st.tx_packets),
        (MAX_BURST as u64, MAX_BURST as u64)
    );
}

#[test]
fn shared_payload_returns_to_pool_with_last_reference() {
    let pool = new_pool(64);
    let base = pool.in_use();
    let payload = frame(&pool, 7, 1000).into_shared().expect("single segment");
    assert_eq!(pool.in_use(), base + 1);
    let mut copies = Vec::new();
    payload.share_n(3, &mut copies);
    assert_eq!(payload.refcnt(), 4);
    let extra = copies[0].clone();
    assert_eq!(payload.refcnt(), 5);
    drop(extra);
    drop(copies);
    assert_eq!(payload.refcnt(), 1);
    assert_eq!(pool.in_use(), base + 1, "still held by the last reference");
    drop(payload);
    assert_eq!(
        pool.in_use(),
        base,
        "freed exactly when the last reference went"
    );

    // Indirect clones: the direct buffer stays until the clone is freed too.
    let clone_pool = pool_small();
    let m = frame(&pool, 1, 100);
    let c = m.clone_into(&clone_pool).expect("clone");
    assert_eq!(c.data(), m.data());
    assert!(
        !c.is_writable() && !m.is_writable(),
        "shared bytes are read-only"
    );
    drop(m);
    assert_eq!(
        pool.in_use(),
        base + 1,
        "direct buffer kept alive by its clone"
    );
    drop(c);
    assert_eq!(pool.in_use(), base);
    assert_eq!(clone_pool.in_use(), 0);
}

fn pool_small() -> Mempool {
    Mempool::new(common::eal(), &unique("clonepool"), 64, 0, 0).expect("header pool")
}

#[test]
fn chained_header_and_shared_payload_transmit() {
    let (pool, hdr_pool, base) = payload_and_header_pools(256, 256);
    let (_port, mut rx, mut tx) = ring_port(&pool);

    let payload = frame(&pool, 100, 500).into_shared().expect("shared");
    let mut refs = Vec::new();
    payload.share_n(3, &mut refs);
    let mut out = MbufBatch::new();
    for (dest, p) in refs.into_iter().enumerate() {
        let mut h = hdr_pool.alloc().expect("header");
        h.extend_from_slice(&[dest as u8; 14])
            .expect("header bytes");
        let chain = h.chain_shared(p).map_err(|(e, _, _)| e).expect("chain");
        assert_eq!(chain.segments(), 2);
        assert_eq!(chain.pkt_len(), 514);
        out.push(chain).expect("room");
    }
    drop(payload);
    let got = through_ring(&mut tx, &mut rx, &mut out, 3);
    let body = frame_bytes(100, 500);
    for (dest, m) in got.iter().enumerate() {
        let bytes = m.to_vec();
        assert_eq!(
            &bytes[..14],
            &[dest as u8; 14],
            "each destination has its own header"
        );
        assert_eq!(&bytes[14..], &body[..], "all share the same payload bytes");
    }
    drop(got);
    assert_eq!(
        (pool.in_use(), hdr_pool.in_use()),
        base,
        "payload and headers all returned"
    );
}

#[test]
fn tx_leftovers_stay_owned() {
    // A TX queue with 32 descriptors on a net_ring whose ring is full keeps the rest.
    let pool = new_pool(4096);
    let base = pool.in_use();
    let (_port, mut rx, mut tx) = ring_port(&pool);
    let mut total = 0;
    let mut batch = MbufBatch::new();
    // net_ring's ring holds 1024 by default: fill it until TX refuses.
    for _ in 0..64 {
        while !batch.is_full() {
            batch.push(frame(&pool, 0, 64)).expect("room");
        }
        let n = tx.tx_burst(&mut batch);
        total += n;
        if n < MAX_BURST {
            break;
        }
    }
    assert!(
        !batch.is_empty(),
        "the ring filled up and TX left some mbufs in the batch"
    );
    assert_eq!(pool.in_use() as usize, base as usize + total + batch.len());
    batch.clear();
    let mut got = MbufBatch::new();
    while rx.rx_burst(&mut got) > 0 {
        got.clear();
    }
    assert_eq!(pool.in_use(), base, "nothing leaked");
}

#[test]
fn two_pinned_lcores_pass_packets_over_a_ring() {
    let eal = common::eal();
    let pool = new_pool(1024);
    let base = pool.in_use();
    let (mut prod, mut cons) = Ring::create(eal, &unique("ring"), 256).expect("ring");
    let cores = lcore::available_cores();
    let (c0, c1) = (cores[0], *cores.get(1).unwrap_or(&cores[0]));
    const N: usize = 10_000;

    let producer = lcore::spawn(eal, c0, "producer", move |lc| {
        let mut sent = 0usize;
        let mut batch = MbufBatch::new();
        while sent < N {
            while !batch.is_full() && sent + batch.len() < N {
                let seq = (sent + batch.len()) as u32;
                let mut m = pool.alloc().expect("alloc");
                m.extend_from_slice(&seq.to_le_bytes()).expect("append");
                batch.push(m).expect("room");
            }
            sent += prod.enqueue(&mut batch);
        }
        lc
    })
    .expect("spawn producer");
    let consumer = lcore::spawn(eal, c1, "consumer", move |lc| {
        let mut next = 0u32;
        let mut batch = MbufBatch::new();
        while (next as usize) < N {
            cons.dequeue(&mut batch);
            for m in batch.drain() {
                let seq = u32::from_le_bytes(m.data().try_into().expect("4 bytes"));
                assert_eq!(seq, next, "in order, none lost");
                next += 1;
            }
        }
        (lc, next)
    })
    .expect("spawn consumer");
    let p = producer
        .join()
        .expect("producer thread")
        .expect("producer lcore");
    let (c, received) = consumer
        .join()
        .expect("consumer thread")
        .expect("consumer lcore");
    assert_eq!(received as usize, N);
    assert_eq!((p.core, c.core), (c0, c1));
    assert_ne!(p.lcore_id, c.lcore_id, "each thread got its own lcore id");
    assert_eq!(pool.in_use(), base);
}

#[test]
fn unknown_port_name_is_a_clear_error() {
    let err = Port::id_by_name(common::eal(), "net_does_not_exist").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("net_does_not_exist") && text.contains("no DPDK port"),
        "{text}"
    );
}

#[test]
fn bad_vdev_after_start_is_a_clear_error() {
    let err = common::eal()
        .create_vdev("net_bogusdriver0", "")
        .unwrap_err();
    assert!(err.to_string().contains("rte_dev_probe"), "{err}");
}

#[test]
fn mbuf_bounds_are_checked() {
    let pool = new_pool(16);
    let mut m = pool.alloc().expect("alloc");
    let head = m.headroom();
    assert!(
        m.prepend(head + 1).is_err(),
        "cannot prepend past the headroom"
    );
    m.prepend(8).expect("fits").copy_from_slice(&[1; 8]);
    assert_eq!(m.data(), &[1; 8]);
    assert!(m.adj(9).is_err());
    m.adj(4).expect("adj");
    assert_eq!(m.data_len(), 4);
    assert!(m.append(m.tailroom() + 1).is_err());
    assert!(m.trim(5).is_err());
    m.trim(4).expect("trim");
    assert_eq!(m.data_len(), 0);
}

#[test]
fn alloc_init_fills_a_fresh_single_segment_mbuf() {
    let pool = new_pool(4);
    let (m, r) = pool
        .alloc_init(78, |b| {
            for (i, x) in b.iter_mut().enumerate() {
                *x = i as u8;
            }
            b.len()
        })
        .expect("alloc_init");
    assert_eq!(r, 78);
    assert_eq!(m.data_len(), 78);
    assert_eq!(m.pkt_len(), 78);
    assert_eq!(m.segments(), 1);
    assert!(m.is_writable());
    assert_eq!(m.data(), (0..78u8).collect::<Vec<_>>().as_slice());

    // Longer than a fresh buffer's tailroom: an error, and nothing stays allocated.
    let before = pool.in_use();
    assert!(pool.alloc_init(usize::from(u16::MAX), |_| ()).is_err());
    assert!(pool.alloc_init(70_000, |_| ()).is_err());
    assert_eq!(pool.in_use(), before);

    // An empty pool is an error, not a panic.
    let held: Vec<Mbuf> = std::iter::from_fn(|| pool.alloc().ok()).collect();
    assert!(pool.alloc_init(8, |_| ()).is_err());
    drop(held);
    drop(m);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn alloc_chained_makes_one_chain_per_copy_over_the_shared_payload() {
    let (pool, hdr_pool, base) = payload_and_header_pools(256, 64);
    let (_port, mut rx, mut tx) = ring_port(&pool);

    let payload = frame(&pool, 7, 300).into_shared().expect("shared");
    let mut out: Vec<(Mbuf, usize)> = Vec::with_capacity(MAX_CHAINED);
    // Copy 2's init declines: that chain is freed at once, its payload reference with it.
    pool_chained(&hdr_pool, &payload, 5, &mut out);
    assert_eq!(
        out.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        [0, 1, 3, 4]
    );
    assert_eq!(payload.refcnt(), 5, "ours + four chains");
    let mut batch = MbufBatch::new();
    for (m, dest) in out.drain(..) {
        assert_eq!(m.segments(), 2);
        assert_eq!(m.pkt_len(), 20 + 300);
        assert_eq!(m.data(), &[dest as u8; 20]);
        batch.push(m).expect("room");
    }
    drop(payload);
    let got = through_ring(&mut tx, &mut rx, &mut batch, 4);
    let body = frame_bytes(7, 300);
    for (m, dest) in got.iter().zip([0u8, 1, 3, 4]) {
        let bytes = m.to_vec();
        assert_eq!(&bytes[..20], &[dest; 20]);
        assert_eq!(&bytes[20..], &body[..]);
    }
    drop(got);
    assert_eq!((pool.in_use(), hdr_pool.in_use()), base, "all returned");
}

fn pool_chained(
    hdr_pool: &Mempool,
    payload: &photon_dpdk::SharedMbuf,
    n: usize,
    out: &mut Vec<(Mbuf, usize)>,
) {
    hdr_pool
        .alloc_chained(
            20,
            payload,
            n,
            |i, b| {
                b.fill(i as u8);
                (i != 2).then_some(i)
            },
            out,
        )
        .expect("alloc_chained");
}

#[test]
fn alloc_chained_errors_leave_nothing_allocated() {
    let pool = new_pool(8);
    let hdr_pool = new_pool(4);
    // Room for more than one call may make, so that refusing MAX_CHAINED + 1 is the limit's
    // doing, not the pool's.
    let big_pool = new_pool(64);
    let big_before = big_pool.in_use();
    let payload = frame(&pool, 1, 10).into_shared().expect("shared");
    let mut out: Vec<(Mbuf, ())> = Vec::new();
    let before = (pool.in_use(), hdr_pool.in_use(), payload.refcnt());
    let check = |out: &Vec<(Mbuf, ())>| {
        assert!(out.is_empty());
        assert_eq!((pool.in_use(), hdr_pool.in_use(), payload.refcnt()), before);
    };
    // More than the pool has.
    assert!(matches!(
        hdr_pool.alloc_chained(8, &payload, 5, |_, _| Some(()), &mut out),
        Err(photon_dpdk::Error::PoolEmpty { .. })
    ));
    check(&out);
    // More than one call may make.
    assert!(matches!(
        big_pool.alloc_chained(8, &payload, MAX_CHAINED + 1, |_, _| Some(()), &mut out),
        Err(photon_dpdk::Error::Mbuf {
            why: "more than MAX_CHAINED copies",
            ..
        })
    ));
    assert_eq!(big_pool.in_use(), big_before);
    check(&out);
    // Longer than a fresh buffer.
    assert!(matches!(
        hdr_pool.alloc_chained(
            usize::from(u16::MAX),
            &payload,
            2,
            |_, _| Some(()),
            &mut out
        ),
        Err(photon_dpdk::Error::Mbuf {
            why: "not enough tailroom",
            ..
        })
    ));
    check(&out);
    // Zero copies: nothing happens.
    hdr_pool
        .alloc_chained(8, &payload, 0, |_, _| Some(()), &mut out)
        .expect("zero");
    check(&out);
}
