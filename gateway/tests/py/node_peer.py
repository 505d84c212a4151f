#!/usr/bin/python3
"""Plays the Bitcoin node for photon-gateway's node-side tests (gateway/tests/node_python.rs).

Independent of the gateway's code: messages are python-bitcoinlib's (Debian package
python3-bitcoinlib, installed by scripts/setup.sh). bitcoinlib lacks the BIP 130/133/152/155/339
messages (sendheaders, feefilter, sendcmpct, sendaddrv2, wtxidrelay): their frames are read as a
24-byte header plus a skipped (or byte-checked) payload, and sent through bitcoinlib's own framing
with a raw payload.

Usage: node_peer.py --scenario relay|reconnect --data DIR
It listens on 127.0.0.1 (an OS-chosen port), prints "LISTENING <port>", and plays the scenario
against the gateway that connects. Every check prints "ok: ..."; the first failed check prints
"FAIL: ..." to stderr and exits 1. Exit 0 and "PASS" when all checks passed. Exit 3 if bitcoinlib
is missing.
"""

import argparse
import hashlib
import io
import random
import socket
import struct
import sys

try:
    import bitcoin
    from bitcoin.core import CBlock, CBlockHeader, CTransaction, b2lx
    from bitcoin.core.serialize import VarIntSerializer
    from bitcoin.messages import (MsgSerializable, messagemap, msg_getdata, msg_inv, msg_ping,
                                  msg_tx, msg_verack, msg_version)
    from bitcoin.net import CInv
except ImportError as e:
    print("python3-bitcoinlib is missing for /usr/bin/python3 (%s): run scripts/setup.sh" % e,
          file=sys.stderr)
    sys.exit(3)

MSG_TX, MSG_BLOCK, MSG_WTX = 1, 2, 5
MSG_WITNESS_FLAG = 1 << 30
MSG_WITNESS_BLOCK = MSG_BLOCK | MSG_WITNESS_FLAG
NODE_NETWORK, NODE_WITNESS = 1, 8


def fail(what):
    print("FAIL: " + what, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)
    print("ok: " + what, flush=True)


def run(main, peer):
    """Runs a script's main; a socket timeout fails the run, naming the `peer` waited for."""
    try:
        main()
    except socket.timeout:
        fail("timed out waiting for " + peer)


def sha256d(b):
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


class msg_raw(MsgSerializable):
    """A message bitcoinlib has no class for, framed by bitcoinlib (MsgSerializable.to_bytes)."""

    def __init__(self, command, payload=b""):
        super().__init__()
        self.command = command
        self.payload = payload

    def msg_ser(self, f):
        f.write(self.payload)


class Node:
    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(30)
        # Messages read while waiting for another command, oldest first.
        self.stash = []

    def send(self, msg):
        self.sock.sendall(msg.to_bytes())

    def read_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                fail("gateway closed the connection")
            buf += chunk
        return bytes(buf)

    def recv(self):
        """(command, payload, bitcoinlib message or None). Answers nothing by itself."""
        header = self.read_exact(24)
        if header[:4] != bitcoin.params.MESSAGE_START:
            fail("bad magic %s" % header[:4].hex())
        command = header[4:16].rstrip(b"\x00")
        (length,) = struct.unpack("<I", header[16:20])
        if length > 4_000_000:
            fail("oversize %s: %d" % (command, length))
        payload = self.read_exact(length)
        if sha256d(payload)[:4] != header[20:24]:
            fail("bad checksum on %s" % command)
        msg = None
        if command in messagemap:
            msg = messagemap[command].msg_deser(io.BytesIO(payload))
        return command.decode(), payload, msg

    def expect(self, command):
        """The first `command` message (stashed earlier, or read now); pings are answered,
        other messages kept for a later expect."""
        for i, (cmd, payload, msg) in enumerate(self.stash):
            if cmd == command:
                del self.stash[i]
                return payload, msg
        while True:
            cmd, payload, msg = self.recv()
            if cmd == command:
                return payload, msg
            if cmd == "ping":
                pong = messagemap[b"pong"]()
                pong.nonce = msg.nonce
                self.send(pong)
                continue
            print("   (kept %s, %d bytes, for later)" % (cmd, len(payload)), flush=True)
            self.stash.append((cmd, payload, msg))


def fetch_block(node):
    """The next block from the gateway, pushed (`block`) or announced (`headers`/`inv`, then
    fetched with getdata, as a real node does)."""
    for i, (cmd, _, _) in enumerate(node.stash):
        if cmd in ("block", "headers", "inv"):
            break
    else:
        i = None
    while True:
        if i is not None:
            cmd, payload, msg = node.stash.pop(i)
            i = None
        else:
            cmd, payload, msg = node.recv()
        if cmd == "block":
            return payload, msg
        if cmd == "headers":
            want = [h.GetHash() for h in parse_headers(payload)]
        elif cmd == "inv" and all(it.type == MSG_BLOCK for it in msg.inv):
            want = [it.hash for it in msg.inv]
        elif cmd == "ping":
            pong = messagemap[b"pong"]()
            pong.nonce = msg.nonce
            node.send(pong)
            continue
        else:
            print("   (kept %s, %d bytes, for later)" % (cmd, len(payload)), flush=True)
            node.stash.append((cmd, payload, msg))
            continue
        node.send(msg_getdata_of([inv(MSG_WITNESS_BLOCK, h) for h in want]))


def load_block(data, height):
    raw = open("%s/%d.raw" % (data, height), "rb").read()
    return raw, CBlock.deserialize(raw)


def inv(type_, hash_):
    i = CInv()
    i.type = type_
    i.hash = hash_
    return i


def parse_headers(payload):
    """`headers`: varint count, then per header 80 bytes and a varint tx count of 0."""
    f = io.BytesIO(payload)
    n = VarIntSerializer.stream_deserialize(f)
    out = []
    for _ in range(n):
        out.append(CBlockHeader.stream_deserialize(f))
        if VarIntSerializer.stream_deserialize(f) != 0:
            fail("headers entry with transactions")
    return out


def handshake(node, start_height):
    """Core's side of the handshake with an outbound gateway: their version comes first."""
    cmd, _, v = node.recv()
    check(cmd == "version", "first message is version (got %s)" % cmd)
    check(v.nVersion == 70016, "gateway speaks protocol 70016 (got %d)" % v.nVersion)
    check(v.strSubVer.startswith(b"/photon-gateway:"), "user agent %r" % v.strSubVer)
    check(v.nServices & NODE_WITNESS, "gateway advertises NODE_WITNESS")
    check(v.fRelay, "gateway asks for transaction relay")

    ours = msg_version(70016)
    ours.nServices = NODE_NETWORK | NODE_WITNESS
    # Plays Bitcoin Core (which takes unsolicited blocks): Core's user agent, with a comment.
    ours.strSubVer = b"/Satoshi:27.0.0(bitcoinlib-test-node)/"
    ours.nStartingHeight = start_height
    node.send(ours)
    node.send(msg_raw(b"wtxidrelay"))
    node.send(msg_raw(b"sendaddrv2"))
    node.send(msg_verack())

    before_verack = []
    while True:
        cmd, _, _ = node.recv()
        if cmd == "verack":
            break
        before_verack.append(cmd)
    check(sorted(before_verack) == ["sendaddrv2", "wtxidrelay"],
          "wtxidrelay and sendaddrv2 before verack (got %s)" % before_verack)
    after = []
    payloads = {}
    for _ in range(3):
        cmd, payload, _ = node.recv()
        after.append(cmd)
        payloads[cmd] = payload
    check(after == ["sendheaders", "sendcmpct", "feefilter"],
          "sendheaders, sendcmpct, feefilter after verack (got %s)" % after)
    check(payloads["sendcmpct"] == b"\x00" + struct.pack("<Q", 2),
          "sendcmpct: low-bandwidth, version 2")
    check(len(payloads["feefilter"]) == 8, "feefilter carries an 8-byte fee rate")
    # As Core does after verack: announce blocks to me with headers.
    node.send(msg_raw(b"sendheaders"))

    nonce = random.getrandbits(64)
    node.send(msg_ping(nonce=nonce))
    _, pong = node.expect("pong")
    check(pong.nonce == nonce, "pong echoes the ping nonce")


def scenario_relay(node, data):
    raw_403617, b403617 = load_block(data, 403617)
    handshake(node, 403617)

    # 1. A new transaction from the node: inv (by wtxid) -> getdata -> tx.
    tx = b403617.vtx[5]
    wtxid = sha256d(tx.serialize())  # pre-segwit: equals the txid
    node.send(msg_inv_of([inv(MSG_WTX, wtxid)]))
    _, gd = node.expect("getdata")
    check([(i.type, i.hash) for i in gd.inv] == [(MSG_WTX, wtxid)],
          "gateway asks for the announced tx by wtxid")
    t = msg_tx()
    t.tx = tx
    node.send(t)
    print("sent tx %s" % b2lx(tx.GetTxid()), flush=True)

    # 2. A new block from the node: inv -> getdata (witness) -> block (the raw bytes).
    block_hash = sha256d(raw_403617[:80])
    node.send(msg_inv_of([inv(MSG_BLOCK, block_hash)]))
    _, gd = node.expect("getdata")
    check([(i.type, i.hash) for i in gd.inv] == [(MSG_WITNESS_BLOCK, block_hash)],
          "gateway asks for the announced block with witnesses")
    node.send(msg_raw(b"block", raw_403617))
    print("sent block %s" % b2lx(block_hash), flush=True)

    # 3. Junk: a real block with one header byte changed (the nonce), unsolicited.
    raw_363703, _ = load_block(data, 363703)
    junk = bytearray(raw_363703)
    junk[76] ^= 0x01
    node.send(msg_raw(b"block", bytes(junk)))
    print("sent junk block", flush=True)

    # 4. A transaction from the network: the gateway announces it by wtxid and serves it.
    raw_702861, b702861 = load_block(data, 702861)
    seg_tx = next(t for t in b702861.vtx[1:] if t.has_witness())
    seg_wtxid = sha256d(seg_tx.serialize())
    _, iv = node.expect("inv")
    check([(i.type, i.hash) for i in iv.inv] == [(MSG_WTX, seg_wtxid)],
          "gateway announces the network's tx by wtxid %s" % b2lx(seg_wtxid))
    unknown = inv(MSG_WTX, b"\x07" * 32)
    node.send(msg_getdata_of([inv(MSG_WTX, seg_wtxid), unknown]))
    _, got = node.expect("tx")
    check(got.tx.serialize() == seg_tx.serialize() and got.tx.GetTxid() == seg_tx.GetTxid(),
          "gateway serves the tx with its witness on getdata")
    _, nf = node.expect("notfound")
    check([(i.type, i.hash) for i in nf.inv] == [(MSG_WTX, b"\x07" * 32)],
          "unknown getdata item answered with notfound")

    # 5. Blocks from the network, pushed: a pre-segwit one and a segwit one.
    for height in (367891, 702861):
        raw, _ = load_block(data, height)
        payload, m = node.expect("block")
        blk = m.block
        want_hash = sha256d(raw[:80])
        check(blk.GetHash() == want_hash, "block %d: hash %s" % (height, b2lx(want_hash)))
        check(blk.calc_merkle_root() == blk.hashMerkleRoot,
              "block %d: merkle root of the delivered txs matches the header" % height)
        check(payload == raw, "block %d: delivered bytes equal the original" % height)

    # 6. A block announced with headers (I sent sendheaders), then fetched with getdata.
    want_hash = sha256d(raw_363703[:80])
    payload, _ = node.expect("headers")
    hs = parse_headers(payload)
    check([h.GetHash() for h in hs] == [want_hash], "block 363703 announced by headers")
    node.send(msg_getdata_of([inv(MSG_WITNESS_BLOCK, want_hash)]))
    payload, m = node.expect("block")
    blk = m.block
    check(payload == raw_363703 and blk.calc_merkle_root() == blk.hashMerkleRoot,
          "block 363703 served on getdata, merkle root checks out")
    check(node.stash == [], "nothing else received (%s)" % [c for c, _, _ in node.stash])


def scenario_reconnect(server, node, data):
    handshake(node, 0)
    node.sock.close()
    print("closed the first connection", flush=True)
    server.settimeout(30)
    sock, _ = server.accept()
    handshake(Node(sock), 0)
    check(True, "gateway reconnected and handshook again")


def msg_inv_of(items):
    m = msg_inv()
    m.inv = items
    return m


def msg_getdata_of(items):
    m = msg_getdata()
    m.inv = items
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True, choices=["relay", "reconnect"])
    ap.add_argument("--data", required=True, help="directory of <height>.raw mainnet blocks")
    args = ap.parse_args()
    bitcoin.SelectParams("mainnet")

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(30)
    print("LISTENING %d" % server.getsockname()[1], flush=True)
    sock, _ = server.accept()
    node = Node(sock)
    if args.scenario == "relay":
        scenario_relay(node, args.data)
    else:
        scenario_reconnect(server, node, args.data)
    print("PASS", flush=True)


if __name__ == "__main__":
    run(main, "the gateway")
