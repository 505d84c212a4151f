#!/usr/bin/python3
"""Two Bitcoin nodes for photon-gateway's end-to-end tests (gateway/tests/e2e_relay.rs):
node A feeds its gateway a real block's transactions and then the block; node B must receive
the block from its gateway byte-identical, with a hash and merkle root that check out.

Independent of the gateway's code: python-bitcoinlib (Debian python3-bitcoinlib) and the
handshake/framing helpers of node_peer.py beside this file.

Usage: gateway_e2e.py --height H --txs all|split|none --data DIR
Listens on two OS-chosen ports and prints "LISTENING <portA> <portB>". Then:
  --txs split: sends every tenth transaction of the block (i % 10 == 3) to gateway A, prints
               "PHASE1 <n>" and waits for "CONTINUE" on stdin (the test starts gateway B
               then, so B never sees those transactions);
  accepts gateway B; sends the (remaining) transactions to A (--txs all|split);
  prints "READY <n>" and waits for "SEND_BLOCK" on stdin; sends the block to A;
  expects it at B and checks it. Every check prints "ok: ..."; the first failure prints
  "FAIL: ..." on stderr and exits 1; "PASS" at the end.
"""

import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from node_peer import (MSG_WTX, Node, check, fail, fetch_block, handshake, inv,  # noqa: E402
                       load_block, msg_inv_of, msg_raw, run, sha256d)

import bitcoin  # noqa: E402
from bitcoin.core import b2lx  # noqa: E402
from bitcoin.messages import msg_tx  # noqa: E402


def wait_stdin(expect):
    line = sys.stdin.readline().strip()
    if line != expect:
        fail("expected %r on stdin, got %r" % (expect, line))


def send_txs(node, txs):
    """Announce by wtxid (500 per inv) and serve each getdata with the transaction."""
    for i in range(0, len(txs), 500):
        by_wtxid = {sha256d(t.serialize()): t for t in txs[i:i + 500]}
        node.send(msg_inv_of([inv(MSG_WTX, w) for w in by_wtxid]))
        served = set()
        while len(served) < len(by_wtxid):
            _, gd = node.expect("getdata")
            for it in gd.inv:
                t = by_wtxid.get(it.hash)
                if t is None or it.type != MSG_WTX:
                    fail("getdata for something not announced: %s" % b2lx(it.hash))
                m = msg_tx()
                m.tx = t
                node.send(m)
                served.add(it.hash)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--txs", choices=["all", "split", "none"], required=True)
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    bitcoin.SelectParams("mainnet")

    raw, blk = load_block(args.data, args.height)
    txs = list(blk.vtx[1:])  # the coinbase is never announced
    first = [t for i, t in enumerate(txs) if i % 10 == 3] if args.txs == "split" else []
    rest = [t for i, t in enumerate(txs) if not (args.txs == "split" and i % 10 == 3)]
    if args.txs == "none":
        rest = []

    servers = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        s.settimeout(60)
        servers.append(s)
    print("LISTENING %d %d" % tuple(s.getsockname()[1] for s in servers), flush=True)

    sock, _ = servers[0].accept()
    a = Node(sock)
    handshake(a, args.height - 1)
    if first:
        send_txs(a, first)
        print("PHASE1 %d" % len(first), flush=True)
        wait_stdin("CONTINUE")
    sock, _ = servers[1].accept()
    b = Node(sock)
    handshake(b, args.height - 1)
    send_txs(a, rest)
    print("READY %d" % len(rest), flush=True)
    wait_stdin("SEND_BLOCK")

    block_hash = sha256d(raw[:80])
    a.send(msg_raw(b"block", raw))
    print("sent block %d %s to gateway A" % (args.height, b2lx(block_hash)), flush=True)
    payload, m = fetch_block(b)
    got = m.block
    check(got.GetHash() == block_hash, "node B got block %s" % b2lx(block_hash))
    check(got.calc_merkle_root() == got.hashMerkleRoot,
          "merkle root of the delivered transactions matches the header")
    check(payload == raw, "delivered bytes equal the original (%d bytes)" % len(raw))
    print("PASS", flush=True)


if __name__ == "__main__":
    run(main, "a gateway")
