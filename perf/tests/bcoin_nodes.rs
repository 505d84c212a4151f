//! bcoin, a full node written by others, at both ends: node A ⇄ gateway A ⇄ relay ⇄ gateway B
//! ⇄ node B, node B's only peer its gateway. Every check is on node B's own state, through its
//! RPC: its chain tip, its mempool, its peers, its bans and its log.
//!
//! Needs Node.js and bcoin (`scripts/setup.sh` installs them into perf/nodes/bcoin); where
//! either is missing the test fails saying so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bitcoin::Network;
use photon_gateway::core::{CoreConfig, Delivery, RelayEndpoint};
use photon_gateway::driver::{self, DriverConfig, GatewayHandle, Snapshot};
use photon_gateway::node::NodeConfig;
use photon_perf::realnode::{Bcoin, BcoinConfig};
use photon_protocol::identity::{Identity, PublicKey};
use photon_relay::socket::{RunningRelay, SocketRelay, SocketRelayConfig};
use ring::rand::SystemRandom;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("photon-bcoin-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(name: &str, dir: &std::path::Path, memory: bool) -> Bcoin {
    let mut c = BcoinConfig::loopback(name, dir);
    c.memory = memory;
    Bcoin::start(c).unwrap_or_else(|e| panic!("{e}"))
}

fn relay() -> RunningRelay {
    let mut cfg = SocketRelayConfig::loopback(1);
    cfg.recv_buffer = Some(8 << 20);
    cfg.send_buffer = Some(8 << 20);
    cfg.control.keepalive_ms = 200;
    let id = Identity::generate(&SystemRandom::new()).unwrap();
    SocketRelay::bind(cfg, id)
        .expect("relay binds")
        .spawn()
        .expect("relay runs")
}

/// A gateway's key, made before it starts (so the other can trust it).
struct Gw {
    id: Identity,
}

impl Gw {
    fn new() -> Gw {
        Gw {
            id: Identity::generate(&SystemRandom::new()).unwrap(),
        }
    }

    fn key(&self) -> PublicKey {
        self.id.public_key()
    }

    fn start(
        &self,
        node: SocketAddr,
        relay: &RunningRelay,
        trusted: PublicKey,
        delivery: Delivery,
    ) -> GatewayHandle {
        let mut core = CoreConfig::new();
        core.relays.push(RelayEndpoint {
            addr: SocketAddr::V4(relay.addr()),
            public_key: relay.public_key(),
        });
        core.trusted_origins = vec![trusted];
        core.keepalive = Duration::from_millis(100);
        core.link_quiet = Duration::from_millis(600);
        core.register_retry = Duration::from_millis(100);
        core.delivery = delivery;
        driver::spawn(
            DriverConfig {
                // Events are not read here.
                event_queue: 0,
                ..DriverConfig::local(
                    core,
                    "127.0.0.1:0".parse().unwrap(),
                    node,
                    NodeConfig::new(Network::Regtest),
                )
            },
            Identity::from_pkcs8_bytes(self.id.to_pkcs8_bytes()).unwrap(),
            None,
        )
        .expect("gateway starts")
    }
}

fn wait_snapshot(gw: &GatewayHandle, what: &str, ok: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = gw.snapshot();
        if ok(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not reached; last snapshot {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gateways A and B, each beside its node, both registered at the relay and handshaken with
/// their nodes.
struct Pair {
    /// Gateway A: running while the pair lives.
    _a: GatewayHandle,
    b: GatewayHandle,
}

fn pair(na: &Bcoin, nb: &Bcoin, relay: &RunningRelay, delivery: Delivery) -> Pair {
    let (ka, kb) = (Gw::new(), Gw::new());
    let a = ka.start(na.p2p_addr(), relay, kb.key(), delivery);
    let b = kb.start(nb.p2p_addr(), relay, ka.key(), delivery);
    for (gw, n) in [(&a, "A"), (&b, "B")] {
        wait_snapshot(gw, &format!("gateway {n} up"), |s| {
            s.node.messages_in > 0
                && s.links
                    .iter()
                    .all(|l| l.2 == photon_gateway::core::LinkState::Up)
        });
    }
    for n in [na, nb] {
        n.wait_until("its gateway as a peer", WAIT, |n| {
            n.peers().is_ok_and(|p| !p.is_empty())
        })
        .unwrap();
    }
    Pair { _a: a, b }
}

/// Mine `n` at A and wait for B's tip to be A's last block; B's chain then holds every one of
/// them at the same height, in order.
fn mine_and_follow(a: &Bcoin, b: &Bcoin, n: u32, to: &str) -> Vec<String> {
    let hashes = a.mine(n, to).unwrap();
    let last = hashes.last().expect("mined").clone();
    b.wait_tip(&last, WAIT)
        .unwrap_or_else(|e| panic!("{e}; B at height {:?}", b.height()));
    let top = a.height().unwrap();
    for (i, h) in hashes.iter().enumerate() {
        let height = top + 1 - hashes.len() as u64 + i as u64;
        assert_eq!(&b.block_hash(height).unwrap(), h, "B's block at {height}");
    }
    hashes
}

/// B kept its gateway as its one peer throughout, never banned it, and logged no
/// misbehaviour for it.
fn b_never_punished_its_gateway(b: &Bcoin, peer_ids: &[u64]) {
    let peers = b.peers().unwrap();
    let ids: Vec<u64> = peers.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids, peer_ids, "B's peers now vs at the start: {peers:#?}");
    assert!(b.banned().unwrap().is_empty(), "B banned someone");
    let log = b.log();
    assert!(
        log.contains("Chain is loading"),
        "B's log at {} is not being written",
        b.log_path().display()
    );
    let bad = b.misbehaviour_lines();
    assert!(bad.is_empty(), "B's log: {bad:#?}");
}

fn peer_ids(n: &Bcoin) -> Vec<u64> {
    n.peers()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

fn segwit_active(n: &Bcoin) -> bool {
    let info = n.rpc("getblockchaininfo", json!([])).unwrap();
    let status = &info["bip9_softforks"]["segwit"]["status"];
    status == "active"
}

#[test]
fn bcoin_blocks_runs_txs_segwit_bursts_and_a_reorg_cross_photon() {
    let dir = scratch("main");
    let (na, nb) = (start("a", &dir, true), start("b", &dir, true));
    let relay = relay();
    let gws = pair(&na, &nb, &relay, Delivery::Announce);
    let ids = peer_ids(&nb);
    assert_eq!(ids.len(), 1, "B's only peer is its gateway");
    let to_a = na.new_address().unwrap();

    // One block, then a run of ten in order.
    mine_and_follow(&na, &nb, 1, &to_a);
    mine_and_follow(&na, &nb, 10, &to_a);
    // A burst of 110 at once (coinbases mature): B catches up through its gateway.
    mine_and_follow(&na, &nb, 110, &to_a);
    let s = gws.b.snapshot();
    assert_eq!(s.node.getdata_not_found, 0, "{:#?}", s.node);

    // A wallet transaction at A enters B's mempool; the block mining it is B's tip.
    let to_b = nb.new_address().unwrap();
    let txid = na.send_to(&to_b, 150_000_000).unwrap();
    nb.wait_until("the tx in B's mempool", WAIT, |n| {
        n.mempool().is_ok_and(|m| m.contains(&txid))
    })
    .unwrap();
    mine_and_follow(&na, &nb, 1, &to_a);
    assert!(
        !nb.mempool().unwrap().contains(&txid),
        "mined, out of B's mempool"
    );

    // Segwit: activate it (bcoin's regtest: BIP9, ~432 blocks), in bursts of 150.
    while !segwit_active(&na) {
        mine_and_follow(&na, &nb, 150, &to_a);
    }
    assert!(segwit_active(&nb));
    // A witness wallet at A, funded; what it sends spends P2WPKH outputs (a witness).
    na.witness_wallet("seg").unwrap();
    let seg_addr = na.new_address_in("seg").unwrap();
    na.send_to(&seg_addr, 2_000_000_000).unwrap();
    mine_and_follow(&na, &nb, 1, &to_a);
    let seg_txid = na.send_from("seg", &to_b, 200_000_000).unwrap();
    nb.wait_until("the segwit tx in B's mempool", WAIT, |n| {
        n.mempool().is_ok_and(|m| m.contains(&seg_txid))
    })
    .unwrap();
    let raw = nb.rpc("getrawtransaction", json!([seg_txid, 1])).unwrap();
    assert_ne!(
        raw["hash"], raw["txid"],
        "a witness: wtxid differs: {raw:#}"
    );
    mine_and_follow(&na, &nb, 1, &to_a);
    assert!(!nb.mempool().unwrap().contains(&seg_txid));

    // A reorganises: its tip is invalidated and a longer branch mined; B follows it.
    let old_tip = na.best_block().unwrap();
    na.invalidate(&old_tip).unwrap();
    let branch = na.mine(2, &to_a).unwrap();
    nb.wait_tip(&branch[1], WAIT)
        .unwrap_or_else(|e| panic!("{e}; B at {:?}", nb.best_block()));
    let top = na.height().unwrap();
    assert_eq!(nb.block_hash(top - 1).unwrap(), branch[0]);

    // Nothing answered notfound; the bursts were caught up by getblocks.
    let s = wait_snapshot(&gws.b, "B's node counters", |s| s.node.getblocks_served > 0);
    assert_eq!(s.node.getdata_not_found, 0, "{:#?}", s.node);
    b_never_punished_its_gateway(&nb, &ids);
    drop(gws);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_delivery_mode_ends_in_bcoins_chain() {
    let dir = scratch("modes");
    let (na, nb) = (start("a", &dir, true), start("b", &dir, true));
    let relay = relay();
    let to_a = na.new_address().unwrap();
    for mode in [Delivery::Push, Delivery::Compact, Delivery::Announce] {
        let gws = pair(&na, &nb, &relay, mode);
        let ids = peer_ids(&nb);
        mine_and_follow(&na, &nb, 3, &to_a);
        // Node counters reach the snapshot every 500 ms.
        let s = wait_snapshot(&gws.b, "B's node counters", |s| s.node.getdata_served >= 3);
        // bcoin takes neither unsolicited blocks nor high-bandwidth compact blocks: every
        // mode announced, and the node fetched.
        assert_eq!(s.node.blocks_sent, 0, "{mode:?}: {:#?}", s.node);
        assert_eq!(s.node.cmpct_blocks_sent, 0, "{mode:?}");
        if mode != Delivery::Announce {
            assert!(s.node.delivery_fallbacks >= 3, "{mode:?}: {:#?}", s.node);
        }
        b_never_punished_its_gateway(&nb, &ids);
        drop(gws);
        // B sees its gateway go; wait until it has, so the next pair's peer is the new one.
        nb.wait_until("the old gateway gone", WAIT, |n| {
            n.peers().is_ok_and(|p| p.is_empty())
        })
        .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_node_catches_up_through_its_gateway() {
    let dir = scratch("restart");
    let na = start("a", &dir, true);
    let mut nb = start("b", &dir, false);
    let relay = relay();
    let gws = pair(&na, &nb, &relay, Delivery::Announce);
    let to_a = na.new_address().unwrap();
    mine_and_follow(&na, &nb, 5, &to_a);

    // B stops; A mines 30 meanwhile: they reach gateway B, which keeps them.
    let config = nb.config().clone();
    nb.stop();
    let before = gws.b.snapshot().stats.blocks_from_network;
    let hashes = na.mine(30, &to_a).unwrap();
    wait_snapshot(&gws.b, "gateway B has the 30 blocks", |s| {
        s.stats.blocks_from_network >= before + 30
    });
    // B starts again from its data folder; the gateway reconnects and B catches up.
    nb = Bcoin::start(config).unwrap_or_else(|e| panic!("{e}"));
    nb.wait_tip(hashes.last().unwrap(), WAIT)
        .unwrap_or_else(|e| panic!("{e}; B at height {:?}", nb.height()));
    let ids = peer_ids(&nb);
    mine_and_follow(&na, &nb, 2, &to_a);
    assert_eq!(gws.b.snapshot().node.getdata_not_found, 0);
    b_never_punished_its_gateway(&nb, &ids);
    drop(gws);
    let _ = std::fs::remove_dir_all(&dir);
}
