//! The baselines of `[block]` end to end (docs/protocol.md §6.8, §6.9): node A
//! (python-bitcoinlib, tests/py/gateway_e2e.py) → gateway A → a real relay (photon-relay's
//! kernel-socket backend on loopback) → gateway B → node B, with real mainnet blocks that must
//! arrive byte-identical (node B checks hash, merkle root and bytes). The harness is
//! tests/common.
//!
//! Needs `/usr/bin/python3` with python-bitcoinlib (scripts/setup.sh).

use std::time::Duration;

use photon_gateway::core::{BlockEncoding, CoreConfig, GatewayEvent};

mod common;

use common::*;

/// `config` with the deployment-wide `[block]` settings.
fn block_mode(mut config: CoreConfig, encoding: BlockEncoding, encrypt: bool) -> CoreConfig {
    config.block_encoding = encoding;
    config.encrypt = encrypt;
    config
}

/// Deployment-wide `encoding = "full"`, `encrypt = false`: the block's own serialization,
/// unsealed, no transactions known anywhere, no key release.
#[test]
fn full_unsealed_block_crosses_the_relay_byte_identical() {
    let r = relay(200);
    let mode = |c| block_mode(c, BlockEncoding::Full, false);
    let (mut py, a, b) = nodes_and_gateways(702861, "none", &[&r], &[&r], mode);
    py.wait_for("READY ");
    wait_snapshot(&a, "A's relay link up", links_up);
    wait_snapshot(&b, "B's relay link up", links_up);
    let sb = send_block(&mut py, &b);
    assert_eq!(sb.stats.blocks_in_unsealed, 1);
    assert_eq!(sb.stats.tx_requests_sent, 0, "full needs no transactions");
    assert_eq!(sb.stats.key_releases_received, 0);
    let sa = a.snapshot();
    assert_eq!(sa.stats.blocks_out_unsealed, 1);
    assert_eq!(sa.stats.key_releases_sent, 0);
    // The payload is the block itself plus the 2-byte format and chain prefix.
    assert_eq!(sa.stats.compressed_bytes_out, sa.stats.block_bytes_out + 2);
    let delivered = events(&b).into_iter().find_map(|e| match e {
        GatewayEvent::BlockDelivered {
            encoding,
            sealed,
            timings,
            ..
        } => Some((encoding, sealed, timings)),
        _ => None,
    });
    let (encoding, sealed, timings) = delivered.expect("B's delivery event");
    assert_eq!((encoding, sealed), (BlockEncoding::Full, false));
    assert_eq!(timings.key_wait, Duration::ZERO);
    assert!(
        !events(&a)
            .iter()
            .any(|e| matches!(e, GatewayEvent::KeyReleased { .. })),
        "no key release unsealed"
    );
    r.stop().unwrap();
}

/// Deployment-wide `encoding = "bip152"`, `encrypt = true`: every transaction known, each
/// referenced by a 6-byte ID; sealed, key released on B's receipt.
#[test]
fn bip152_sized_sealed_block_crosses_the_relay_byte_identical() {
    let r = relay(200);
    let mode = |c| block_mode(c, BlockEncoding::Bip152Sized, true);
    let (mut py, a, b) = nodes_and_gateways(702861, "all", &[&r], &[&r], mode);
    let (n, sb) = send_known_block(&mut py, &a, &b);
    assert_eq!(sb.stats.blocks_in_unsealed, 0);
    let sa = wait_snapshot(&a, "A sent", |s| s.stats.blocks_from_node == 1);
    assert_eq!(sa.stats.blocks_out_unsealed, 0);
    // 6 bytes per known transaction (n of them, all but the coinbase), plus header, coinbase
    // and a few bytes of counts: well under a fiftieth of the block.
    let c = sa.stats.compressed_bytes_out as usize;
    assert!(c >= 6 * n + 80, "{c} bytes for {n} known transactions");
    assert!(
        c * 50 < sa.stats.block_bytes_out as usize,
        "{c} of {}",
        sa.stats.block_bytes_out
    );
    let delivered = events(&b).into_iter().find_map(|e| match e {
        GatewayEvent::BlockDelivered {
            encoding, sealed, ..
        } => Some((encoding, sealed)),
        _ => None,
    });
    assert_eq!(delivered, Some((BlockEncoding::Bip152Sized, true)));
    assert!(
        events(&a)
            .iter()
            .any(|e| matches!(e, GatewayEvent::KeyReleased { receipts: 1, .. })),
        "key released on B's receipt"
    );
    r.stop().unwrap();
}
