//! The kernel-socket backend: the same relay over one ordinary UDP socket, one thread, batched
//! I/O through `photon-udp`. It drives the same [`crate::forward::sequence::Forwarder`] and
//! [`Control`] as the DPDK backend and supplies only datagram buffers and `sendmmsg`
//! (its `FanOut`). It is the baseline the DPDK path is measured against, the
//! fallback for machines without a DPDK NIC, and what other crates' tests start. Design:
//! `docs/internals/relay.md`, "The socket backend".

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use photon_protocol::identity::{Identity, PublicKey};
use photon_protocol::wire::{Packet, HEADER_LEN, MAX_DATAGRAM};
use photon_udp::{Arena, BatchRecv, Datagram, GatherSend, SendReport};
use ring::rand::SystemRandom;

use crate::control::{unix_ms, Control, ControlSettings, ControlShared, Outgoing, Source};
use crate::forward::dedup::Dedup;
use crate::forward::hold::{Forwarding, HoldLimits};
use crate::forward::sequence::{Clocks, FanOut, Forwarder};
use crate::forward::table::{LocalSpec, PeerSpec, Table, TableError};
use crate::forward::write_copy_photon;
use crate::ops::counters::{CoreCounters, Counter, DropReason, LocalCounters};
use crate::ops::stages::StageLog;
use crate::packet::{classify_photon, ForwardHeader, FragmentInfo, UdpPlace};
use photon_ops::config::{in_range, ConfigError};
use serde::Deserialize;

/// Largest receive batch.
pub const MAX_BATCH: usize = 64;
/// Messages per `sendmmsg` call (the send queue flushes when full).
const TX_QUEUE: usize = 256;

/// `[socket]`: the kernel-socket backend (`photon-relay run --backend socket`, [`crate::socket`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Address to bind; default `0.0.0.0:<relay.udp_port>`.
    pub bind: Option<SocketAddrV4>,
    /// Datagrams per `recvmmsg` (1..=64).
    pub batch: usize,
    /// Housekeeping period in ms: counters published, gateways expired, receive timeout.
    pub tick_ms: u64,
    /// SO_RCVBUF / SO_SNDBUF in bytes (the kernel doubles and caps them); default: the
    /// system's.
    pub recv_buffer: Option<usize>,
    pub send_buffer: Option<usize>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            bind: None,
            batch: 32,
            tick_ms: 100,
            recv_buffer: None,
            send_buffer: None,
        }
    }
}

impl SocketConfig {
    /// Checks; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range("socket.batch", self.batch, 1..=MAX_BATCH, "")?;
        in_range("socket.tick_ms", self.tick_ms, 1..=10_000, "")
    }
}

/// Everything a socket relay runs with.
#[derive(Debug, Clone)]
pub struct SocketRelayConfig {
    /// Where to bind (port 0: any free port, see [`SocketRelay::local_addr`]).
    pub bind: SocketAddrV4,
    /// The relay's node id (sender of everything it sends).
    pub node_id: u32,
    /// Loop guard on top of dedup.
    pub max_hops: u8,
    /// Dedup table size (fingerprints).
    pub dedup_entries: usize,
    /// Datagrams per receive batch (1..=64).
    pub batch: usize,
    /// Housekeeping period.
    pub tick: Duration,
    pub recv_buffer: Option<usize>,
    pub send_buffer: Option<usize>,
    /// Peer relays (static hop keys; `next_hop_mac` and `port` are ignored here).
    pub peers: Vec<PeerSpec>,
    /// Cut-through (default) or the store-and-forward baseline ([`crate::forward::hold`]).
    pub forwarding: Forwarding,
    /// Store-and-forward bounds (`timeout` in ms).
    pub hold: HoldLimits,
    /// Registration, keepalives, short IDs, repair cache.
    pub control: ControlSettings,
    /// `[perf]`: stage records (file, node name) for the propagation report
    /// ([`crate::ops::stages`]); `None`: none.
    pub stage_log: Option<(std::path::PathBuf, String)>,
    /// Watches the roster file while running (a newer signed roster replaces the one in force).
    pub roster_watch: Option<photon_ops::roster::RosterWatcher>,
}

impl SocketRelayConfig {
    /// A relay for tests: `127.0.0.1`, a free port, any gateway identity accepted, 20 ms
    /// housekeeping, the default control settings.
    pub fn loopback(node_id: u32) -> SocketRelayConfig {
        SocketRelayConfig {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            node_id,
            max_hops: 8,
            dedup_entries: 1 << 16,
            batch: 32,
            tick: Duration::from_millis(20),
            recv_buffer: None,
            send_buffer: None,
            peers: Vec::new(),
            forwarding: Forwarding::CutThrough,
            hold: HoldLimits {
                max_streams: 64,
                max_bytes: 16 << 20,
                timeout: 1000,
            },
            control: ControlSettings::default(),
            stage_log: None,
            roster_watch: None,
        }
    }
}

/// Why the socket relay could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot bind UDP {addr}: {source} (is another relay running on that port?)")]
    Bind {
        addr: SocketAddrV4,
        source: std::io::Error,
    },
    #[error("socket option {what}: {source}")]
    Option {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the bound address is not IPv4")]
    NotIpv4,
    #[error("forwarding table: {0}")]
    Table(#[from] TableError),
    #[error("receive failed: {0}")]
    Recv(std::io::Error),
    #[error("cannot start the relay thread: {0}")]
    Spawn(std::io::Error),
    #[error("the relay thread panicked")]
    Panicked,
    #[error("cannot open perf.stage_log {path}: {source}")]
    StageLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What a running socket relay publishes for readers on other threads (metrics, tests):
/// lags the relay thread by at most one housekeeping period, exact after it stopped.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// The data path's counters (one "core").
    pub core: Arc<CoreCounters>,
    /// The control path's counters, gauges and peers.
    pub control: ControlShared,
}

/// What the Photon header says about a datagram received on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramAction {
    /// A block fragment for the fan-out (still to be admitted).
    Fragment(FragmentInfo),
    /// For the control path.
    Control,
    /// Drop and count.
    Drop(DropReason),
}

/// Classifies a UDP payload from `from` ([`crate::packet::classify_photon`], the Photon part
/// of [`crate::packet::classify`]): a fragment gets a [`FragmentInfo`] whose offsets are into
/// the datagram itself (`photon_offset` 0), so [`crate::forward::admit`] applies unchanged.
pub fn classify_datagram(dgram: &[u8], from: SocketAddrV4, local: SocketAddrV4) -> DatagramAction {
    let place = UdpPlace {
        udp_offset: 0,
        photon_offset: 0,
        udp_checksum: 0,
        src_ip: *from.ip(),
        dst_ip: *local.ip(),
        src_port: from.port(),
        dst_port: local.port(),
    };
    match classify_photon(dgram, place) {
        Ok(Some(info)) => DatagramAction::Fragment(info),
        Ok(None) => DatagramAction::Control,
        Err(reason) => DatagramAction::Drop(reason),
    }
}

/// Where a queued copy's payload lives: a receive buffer, or a datagram the store-and-forward
/// holder released (kept in `Buffers::released` until the end of the poll).
#[derive(Debug, Clone, Copy)]
enum Src {
    Rx(usize),
    Released(usize),
}

/// A fragment as the forwarding sequence sees it on this backend: the poll's `i`-th received
/// datagram, or a datagram copied out of one to be held (store-and-forward).
#[derive(Debug)]
pub enum SocketFrame {
    Rx(usize),
    Held(Vec<u8>),
}

/// Spare datagram buffers kept for the holder (more are freed).
const SPARE_BUFFERS: usize = 4096;

/// One queued fan-out copy: its header slot, the buffer and payload range it shares.
#[derive(Debug, Clone, Copy)]
struct QueuedCopy {
    header: usize,
    buf: Src,
    start: usize,
    end: usize,
    to: SocketAddr,
}

/// A relay on a kernel UDP socket. See the module documentation.
pub struct SocketRelay {
    socket: UdpSocket,
    local: SocketAddrV4,
    control: Control,
    dedup: Dedup,
    counters: LocalCounters,
    stats: Arc<SocketStats>,
    batch: usize,
    tick: Duration,
    started: Instant,
    outgoing: Vec<Outgoing>,
    /// The forwarding sequence (cut-through, or store-and-forward with its holder).
    seq: Forwarder<SocketFrame>,
    bufs: Buffers,
    /// `[perf] stage_log`: the record file (the fragments to stamp are in
    /// [`Buffers::forwarded`], stamped once after the poll's sends).
    stages: Option<StageLog>,
    roster_watch: Option<photon_ops::roster::RosterWatcher>,
}

/// The buffers the fan-out works on.
struct Buffers {
    copy_headers: Vec<[u8; HEADER_LEN]>,
    copies: Vec<QueuedCopy>,
    /// Store-and-forward only: datagrams the holder released this poll, spare buffers.
    released: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// (stream, bytes) of the fragments fanned out in this poll, when stage records are on.
    forwarded: Option<Vec<(u64, u64)>>,
}

/// This backend's side of the forwarding sequence, borrowed for one poll.
struct SocketIo<'a> {
    bufs: &'a mut Buffers,
    control: &'a mut Control,
    socket: &'a UdpSocket,
    /// This poll's received datagrams (in the receiver's arena), and the sender.
    rx: &'a BatchRecv,
    got: &'a [Datagram],
    tx: &'a mut GatherSend,
}

impl<'a> SocketIo<'a> {
    /// The I/O over the relay's buffers, control path and socket and this poll's `io`;
    /// `received`: whether the poll's received datagrams may be referred to (not when held
    /// streams expire: released frames are held copies).
    #[inline]
    fn new(
        bufs: &'a mut Buffers,
        control: &'a mut Control,
        socket: &'a UdpSocket,
        io: &'a mut Mmsg,
        received: bool,
    ) -> SocketIo<'a> {
        SocketIo {
            bufs,
            control,
            socket,
            rx: &io.rx,
            got: if received { &io.got } else { &[] },
            tx: &mut io.tx,
        }
    }
}

impl std::fmt::Debug for SocketRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketRelay")
            .field("local", &self.local)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

/// Sets the buffer-size socket option `opt` (`what` names it in the error) to `n` bytes.
fn set_buffer<O: nix::sys::socket::SetSockOpt<Val = usize>>(
    socket: &UdpSocket,
    opt: O,
    n: usize,
    what: &'static str,
) -> Result<(), SocketError> {
    nix::sys::socket::setsockopt(socket, opt, &n).map_err(|e| SocketError::Option {
        what,
        source: e.into(),
    })
}

impl SocketRelay {
    /// Binds the socket and sets up the control path with the relay's `identity`.
    pub fn bind(cfg: SocketRelayConfig, identity: Identity) -> Result<SocketRelay, SocketError> {
        let socket = UdpSocket::bind(cfg.bind).map_err(|source| SocketError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let local = match socket.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            Ok(_) => return Err(SocketError::NotIpv4),
            Err(source) => {
                return Err(SocketError::Option {
                    what: "local_addr",
                    source,
                })
            }
        };
        socket
            .set_read_timeout(Some(cfg.tick.max(Duration::from_millis(1))))
            .map_err(|source| SocketError::Option {
                what: "SO_RCVTIMEO",
                source,
            })?;
        if let Some(n) = cfg.recv_buffer {
            set_buffer(&socket, nix::sys::socket::sockopt::RcvBuf, n, "SO_RCVBUF")?;
        }
        if let Some(n) = cfg.send_buffer {
            set_buffer(&socket, nix::sys::socket::sockopt::SndBuf, n, "SO_SNDBUF")?;
        }
        let local_spec = LocalSpec {
            node_id: cfg.node_id,
            ip: *local.ip(),
            udp_port: local.port(),
            // One pseudo-port with no MAC: the table's templates are unused on sockets.
            port_macs: vec![[0; 6]],
            max_hops: cfg.max_hops,
        };
        let mut peers = cfg.peers;
        for p in &mut peers {
            p.port = 0;
        }
        let control = Control::new(
            identity,
            local_spec,
            peers,
            cfg.control,
            Arc::new(SystemRandom::new()),
        )?;
        let stages = match &cfg.stage_log {
            Some((path, node)) => {
                Some(
                    StageLog::open(path, node).map_err(|source| SocketError::StageLog {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let batch = cfg.batch.clamp(1, MAX_BATCH);
        let seed = [rand::random::<u64>(), rand::random::<u64>()];
        Ok(SocketRelay {
            socket,
            local,
            control,
            dedup: Dedup::new(cfg.dedup_entries, seed),
            counters: LocalCounters::default(),
            stats: Arc::new(SocketStats {
                core: Arc::new(CoreCounters::default()),
                control: ControlShared::new(),
            }),
            batch,
            tick: cfg.tick,
            started: Instant::now(),
            outgoing: Vec::new(),
            seq: Forwarder::new(cfg.forwarding, cfg.hold),
            bufs: Buffers {
                copy_headers: vec![[0u8; HEADER_LEN]; TX_QUEUE],
                copies: Vec::with_capacity(TX_QUEUE),
                released: Vec::new(),
                spare: Vec::new(),
                forwarded: stages.as_ref().map(|_| Vec::with_capacity(MAX_BATCH)),
            },
            stages,
            roster_watch: cfg.roster_watch,
        })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The relay's public key (gateways verify its register acks with it).
    pub fn public_key(&self) -> PublicKey {
        self.control.public_key()
    }

    /// The relay's node id.
    pub fn node_id(&self) -> u32 {
        self.control.table().local().node_id
    }

    /// Counters and peers for other threads.
    pub fn stats(&self) -> Arc<SocketStats> {
        self.stats.clone()
    }

    /// The control path (tests inspect it).
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Runs until `quit` is set (checked at least every housekeeping period), then publishes
    /// the final counters.
    pub fn run(&mut self, quit: &AtomicBool) -> Result<(), SocketError> {
        // The mmsghdr arrays hold raw pointers (not `Send`): they live on the running thread.
        let mut io = Mmsg {
            rx: BatchRecv::new(Arena::new(), self.batch),
            got: Vec::with_capacity(self.batch),
            tx: GatherSend::new(TX_QUEUE),
        };
        let mut last_tick = Instant::now();
        self.housekeeping();
        while !quit.load(Ordering::Relaxed) {
            self.poll(&mut io)?;
            let now = Instant::now();
            if now.duration_since(last_tick) >= self.tick {
                self.expire_held(&mut io);
                self.housekeeping();
                last_tick = Instant::now();
            }
            if let Some(s) = &mut self.stages {
                s.poll(now);
            }
        }
        self.housekeeping();
        if let Some(s) = &mut self.stages {
            s.finish();
        }
        Ok(())
    }

    /// Starts [`SocketRelay::run`] on its own thread.
    pub fn spawn(mut self) -> Result<RunningRelay, SocketError> {
        let quit = Arc::new(AtomicBool::new(false));
        let q = quit.clone();
        let addr = self.local;
        let public_key = self.public_key();
        let node_id = self.node_id();
        let stats = self.stats();
        let thread = std::thread::Builder::new()
            .name("photon-relay-socket".into())
            .spawn(move || self.run(&q))
            .map_err(SocketError::Spawn)?;
        Ok(RunningRelay {
            addr,
            public_key,
            node_id,
            stats,
            quit,
            thread: Some(thread),
        })
    }

    /// Publishes counters, expires silent gateways, takes a newer roster.
    pub fn housekeeping(&mut self) {
        if let Some(w) = &mut self.roster_watch {
            apply_roster(w, &mut self.control);
        }
        let now = unix_ms();
        self.control.tick(now);
        let _ = self.control.take_table_update();
        if let Some(h) = self.seq.hold_stats() {
            self.counters.set_hold(&h);
        }
        self.stats.core.publish(&self.counters);
        self.control.publish(&self.stats.control, now);
    }

    /// One receive batch (waits up to the housekeeping period for the first datagram),
    /// processed to completion and sent. Returns the datagrams received.
    fn poll(&mut self, io: &mut Mmsg) -> Result<usize, SocketError> {
        let n = self.receive(io)?;
        if n == 0 {
            return Ok(0);
        }
        let now_ms = unix_ms();
        let now = Clocks {
            dedup: Dedup::clock(self.started.elapsed().as_nanos() as u64),
            hold: self.held_clock(),
        };
        for i in 0..n {
            let d = io.got[i];
            self.counters.inc(Counter::RxPackets);
            self.counters.add(Counter::RxBytes, d.len as u64);
            let SocketAddr::V4(from) = d.from else {
                self.counters.drop(DropReason::UdpMalformed);
                continue;
            };
            self.datagram(io, i, from, now_ms, now);
        }
        self.end_of_poll(io);
        self.flush_outgoing(&mut io.tx);
        Ok(n)
    }

    /// Store-and-forward: releases the streams held past the timeout and sends them.
    fn expire_held(&mut self, io: &mut Mmsg) {
        let now = self.held_clock();
        let table: Arc<Table> = self.control.table().clone();
        // Nothing received is referred to: released frames are held copies.
        let mut sio = SocketIo::new(&mut self.bufs, &mut self.control, &self.socket, io, false);
        if self.seq.expire(&mut sio, &table, now, &mut self.counters) > 0 {
            self.end_of_poll(io);
        }
    }

    /// After a poll's fan-out: the queued copies go out, the stage records are stamped, the
    /// released datagrams go back to the spare buffers.
    fn end_of_poll(&mut self, io: &mut Mmsg) {
        let got = &io.got[..];
        self.bufs
            .flush_copies(&self.socket, &mut io.tx, &io.rx, got, &mut self.counters);
        self.stamp_forwarded();
        self.bufs.recycle_released();
    }

    /// Stage records: the fragments fanned out since the last call were sent (the
    /// `sendmmsg` calls returned): one clock read stamps them all.
    fn stamp_forwarded(&mut self) {
        let (Some(s), Some(forwarded)) = (&mut self.stages, &mut self.bufs.forwarded) else {
            return;
        };
        if forwarded.is_empty() {
            return;
        }
        let t = crate::ops::stages::unix_ns();
        for &(stream, bytes) in forwarded.iter() {
            s.fragment(t, stream, bytes);
        }
        forwarded.clear();
    }

    /// The holder's clock: ms since the relay started.
    fn held_clock(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// One `recvmmsg` into the receiver's arena (waits up to the read timeout).
    fn receive(&mut self, io: &mut Mmsg) -> Result<usize, SocketError> {
        let no_address = io.rx.no_address;
        let res = io.rx.recv_into(&self.socket, &mut io.got);
        // A buffer that came without a source address never reaches `got`: count it here, as
        // the datagrams `poll` finds malformed.
        let unaddressed = io.rx.no_address - no_address;
        self.counters.add(Counter::RxPackets, unaddressed);
        self.counters
            .add(Counter::Drop(DropReason::UdpMalformed), unaddressed);
        match res {
            Ok(n) => Ok(n),
            // ICMP errors from earlier sends surface here on some kernels: not fatal.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(errno) if [
                        nix::errno::Errno::ECONNREFUSED as i32,
                        nix::errno::Errno::EHOSTUNREACH as i32,
                        nix::errno::Errno::ENETUNREACH as i32,
                    ]
                    .contains(&errno)
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(SocketError::Recv(e)),
        }
    }

    fn datagram(&mut self, io: &mut Mmsg, i: usize, from: SocketAddrV4, now_ms: u64, now: Clocks) {
        let dgram = io.rx.data(&io.got[i]);
        match classify_datagram(dgram, from, self.local) {
            DatagramAction::Drop(r) => self.counters.drop(r),
            DatagramAction::Control => {
                self.counters.inc(Counter::ToControl);
                self.control
                    .handle(now_ms, Source::socket(from), dgram, &mut self.outgoing);
            }
            DatagramAction::Fragment(info) => {
                let table: Arc<Table> = self.control.table().clone();
                let mut sio =
                    SocketIo::new(&mut self.bufs, &mut self.control, &self.socket, io, true);
                let frame = SocketFrame::Rx(i);
                self.seq.fragment(
                    &mut sio,
                    &table,
                    &self.dedup,
                    frame,
                    &info,
                    now,
                    &mut self.counters,
                );
            }
        }
    }

    fn flush_outgoing(&mut self, tx: &mut GatherSend) {
        if self.outgoing.is_empty() {
            return;
        }
        let SocketRelay {
            socket,
            outgoing,
            counters,
            ..
        } = self;
        for chunk in outgoing.chunks(TX_QUEUE) {
            let parts: Vec<[&[u8]; 2]> = chunk.iter().map(|o| [&o.datagram[..], &[][..]]).collect();
            let addrs: Vec<SocketAddr> = chunk.iter().map(|o| SocketAddr::V4(o.to)).collect();
            count_sent(tx.send(socket, &parts, &addrs), counters);
        }
        outgoing.clear();
    }
}

impl Buffers {
    /// Sends the queued copies (gather `sendmmsg`: header and shared payload).
    fn flush_copies(
        &mut self,
        socket: &UdpSocket,
        tx: &mut GatherSend,
        rx: &BatchRecv,
        got: &[Datagram],
        counters: &mut LocalCounters,
    ) {
        if self.copies.is_empty() {
            return;
        }
        let Buffers {
            copy_headers,
            copies,
            released,
            ..
        } = self;
        let parts: Vec<[&[u8]; 2]> = copies
            .iter()
            .map(|c| {
                let buf = match c.buf {
                    Src::Rx(i) => got.get(i).map_or(&[][..], |d| rx.data(d)),
                    Src::Released(j) => &released[j][..],
                };
                [
                    &copy_headers[c.header][..],
                    buf.get(c.start..c.end).unwrap_or(&[]),
                ]
            })
            .collect();
        let addrs: Vec<SocketAddr> = copies.iter().map(|c| c.to).collect();
        count_sent(tx.send(socket, &parts, &addrs), counters);
        copies.clear();
    }

    /// Returns the released datagrams (all sent by now) to the spare buffers.
    fn recycle_released(&mut self) {
        for b in self.released.drain(..) {
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(b);
            }
        }
    }
}

impl FanOut for SocketIo<'_> {
    type Frame = SocketFrame;

    fn bytes<'a>(&'a self, frame: &'a SocketFrame) -> &'a [u8] {
        match frame {
            SocketFrame::Rx(i) => self.got.get(*i).map_or(&[][..], |d| self.rx.data(d)),
            SocketFrame::Held(d) => d,
        }
    }

    fn keep(&mut self, frame: SocketFrame, info: &FragmentInfo) -> SocketFrame {
        match frame {
            SocketFrame::Rx(i) => {
                let mut d = self.bufs.spare.pop().unwrap_or_default();
                d.clear();
                let bytes = self.got.get(i).map_or(&[][..], |g| self.rx.data(g));
                d.extend_from_slice(bytes.get(..info.datagram_len).unwrap_or(bytes));
                SocketFrame::Held(d)
            }
            held => held,
        }
    }

    fn held_bytes(&self, info: &FragmentInfo) -> usize {
        info.datagram_len
    }

    fn payload_sum(&self, _: &SocketFrame, _: &FragmentInfo) -> u16 {
        // The kernel writes the copies' UDP checksums.
        0
    }

    /// Each copy is two iovecs: its own 36-byte Photon header ([`write_copy_photon`]) and the
    /// payload slice of the buffer, shared by all copies. The fragment also goes into the
    /// control path's repair cache.
    fn fan_out(
        &mut self,
        frame: SocketFrame,
        info: &FragmentInfo,
        shared: &ForwardHeader,
        from: usize,
        table: &Table,
        counters: &mut LocalCounters,
    ) {
        let end = info.datagram_len;
        let src = match frame {
            SocketFrame::Rx(i) => Src::Rx(i),
            SocketFrame::Held(d) => {
                self.bufs.released.push(d);
                Src::Released(self.bufs.released.len() - 1)
            }
        };
        {
            let bytes = match src {
                Src::Rx(i) => self.got.get(i).map_or(&[][..], |d| self.rx.data(d)),
                Src::Released(j) => &self.bufs.released[j][..],
            };
            self.control
                .record_fragment(bytes.get(..end).unwrap_or(bytes));
        }
        let mut queued = 0usize;
        for (_, dest) in table.destinations(from) {
            if self.bufs.copies.len() == TX_QUEUE {
                // Flushing sends what refers to earlier buffers of this batch; they stay valid.
                self.bufs
                    .flush_copies(self.socket, self.tx, self.rx, self.got, counters);
            }
            let slot = self.bufs.copies.len();
            if write_copy_photon(&mut self.bufs.copy_headers[slot], shared, dest).is_none() {
                // No session with this destination (yet).
                continue;
            }
            self.bufs.copies.push(QueuedCopy {
                header: slot,
                buf: src,
                start: HEADER_LEN,
                end,
                to: SocketAddr::V4(dest.spec.addr),
            });
            counters.inc(Counter::FanoutCopies);
            queued += 1;
        }
        if let Some(forwarded) = self.bufs.forwarded.as_mut().filter(|_| queued > 0) {
            let stream = Packet::new_unchecked(shared.photon()).stream();
            // Consecutive fragments of one stream (a batch, a released stream) share an entry.
            match forwarded.last_mut() {
                Some((s, b)) if *s == stream => *b += end as u64,
                _ => forwarded.push((stream, end as u64)),
            }
        }
    }

    fn discard(&mut self, frame: SocketFrame) {
        if let SocketFrame::Held(d) = frame {
            if self.bufs.spare.len() < SPARE_BUFFERS {
                self.bufs.spare.push(d);
            }
        }
    }
}

/// Counts what a gather send did: a message the kernel refused as `drop_tx_full`.
fn count_sent(r: SendReport, counters: &mut LocalCounters) {
    counters.add(Counter::TxPackets, r.sent as u64);
    counters.add(Counter::TxBytes, r.bytes as u64);
    counters.add(Counter::Drop(DropReason::TxFull), r.refused as u64);
}

/// The batched I/O of one running relay: the receiver (its arena and `mmsghdr` array), this
/// poll's datagrams, the gather sender. They hold raw pointers (not `Send`): they live on the
/// running thread.
struct Mmsg {
    rx: BatchRecv,
    got: Vec<Datagram>,
    tx: GatherSend,
}

/// A socket relay running on its own thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct RunningRelay {
    addr: SocketAddrV4,
    public_key: PublicKey,
    node_id: u32,
    stats: Arc<SocketStats>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), SocketError>>>,
}

impl RunningRelay {
    /// Where gateways send to.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }
    /// The relay's public key (for `identity::verify_register_ack`).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }
    /// The relay's node id.
    pub fn node_id(&self) -> u32 {
        self.node_id
    }
    /// Counters (published every housekeeping period).
    pub fn stats(&self) -> Arc<SocketStats> {
        self.stats.clone()
    }
    /// The quit flag the thread polls.
    pub fn quit_flag(&self) -> Arc<AtomicBool> {
        self.quit.clone()
    }
    /// Stops the thread and waits for it; the stats are exact afterwards.
    pub fn stop(mut self) -> Result<(), SocketError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), SocketError> {
        self.quit.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| SocketError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// The largest datagram the relay forwards (for callers sizing buffers).
pub const fn max_datagram() -> usize {
    MAX_DATAGRAM
}

/// Polls the roster file and gives a newer roster to `control`; refusals are counted (and
/// logged once per file change). Shared by both backends' control loops.
pub fn apply_roster(watch: &mut photon_ops::roster::RosterWatcher, control: &mut Control) {
    match watch.poll(unix_ms() / 1000) {
        None => {}
        Some(Ok(r)) => {
            let serial = r.serial;
            match control.replace_roster(r) {
                Ok(()) => tracing::info!(serial, "newer roster in force"),
                Err(e) => tracing::warn!(error = %e, "roster refused"),
            }
        }
        Some(Err(e)) => {
            control.note_roster_refused();
            tracing::warn!(error = %e, "roster file refused; the roster in force stays");
        }
    }
}
