//! Batched UDP I/O for the gateway and the relay's socket backend: `recvmmsg`/`sendmmsg`
//! through `nix`'s safe API, GRO/GSO, gather sends, and the receive-buffer arena (on a hugepage
//! where the system has one free, else normal pages, logged).
//!
//! One `recvmmsg` fills up to [`MAX_BATCH`] slots of the arena and returns at the first
//! datagram (`MSG_WAITFORONE`), so a busy socket is drained in bursts of one system call each
//! while an idle one still answers within the socket's read timeout. Nothing here allocates per
//! datagram.
//!
//! UDP GRO ([`BatchRecv::with_gro`], as quinn-udp does): with `UDP_GRO` set on the socket the
//! kernel may hand up a run of datagrams of one flow as one buffer of up to 64 KiB, with the
//! segment size in a `UDP_GRO` control message (a NIC's GRO coalesces what arrives from the
//! wire; on loopback a sender's `UDP_SEGMENT` (GSO) buffer arrives whole). The receiver splits
//! each buffer back into its datagrams, so the callback sees exactly what it would see without
//! GRO. The arena's 2 MiB is then used as [`GRO_SLOTS`] slots of [`GRO_SLOT`] bytes: the same
//! memory, at most 32 buffers (up to 32 × 53 full-size datagrams) per system call.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders,
    SockaddrStorage,
};
use std::io::{IoSlice, IoSliceMut};

/// Bytes per arena slot: a Photon datagram is at most 1232 bytes; a larger datagram is cut
/// (and then fails its length check) instead of spilling into the next slot.
pub const SLOT: usize = 2048;
/// Slots in the arena: 1024 × 2 KiB = 2 MiB, one x86-64 hugepage.
pub const SLOTS: usize = 1024;
/// Most datagrams per system call.
pub const MAX_BATCH: usize = 64;
/// Bytes per arena slot with GRO on: the largest buffer GRO hands up (a UDP datagram's
/// 64 KiB limit); a smaller slot would cut a coalesced buffer and lose its tail.
pub const GRO_SLOT: usize = 1 << 16;
/// Slots in the arena with GRO on (the same 2 MiB): the most buffers per system call.
pub const GRO_SLOTS: usize = SLOT * SLOTS / GRO_SLOT;

type Slab = [[u8; SLOT]; SLOTS];

enum Storage {
    Huge(hugepage_rs::Box<Slab>),
    Normal(Vec<u8>),
}

/// Where the arena's memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaPages {
    Huge,
    Normal,
}

/// The receive-buffer arena: [`SLOTS`] slots of [`SLOT`] bytes.
pub struct Arena {
    storage: Storage,
}

/// Free hugepages according to /proc/meminfo (0 if it says nothing).
fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Arena {
    /// A hugepage arena where a hugepage is free, else one on normal pages. The fallback is
    /// logged with its reason.
    pub fn new() -> Arena {
        if free_hugepages() == 0 {
            tracing::info!(
                "receive arena: no free hugepages (HugePages_Free = 0), using normal pages"
            );
            return Arena::normal();
        }
        // hugepage-rs panics when the mapping fails (and builds the value on the stack before
        // moving it into the mapping): do it on a thread of its own with room for the 2 MiB
        // value, and treat a panic there as "no hugepage".
        let attempt = std::thread::Builder::new()
            .name("hugepage-alloc".into())
            .stack_size(16 << 20)
            .spawn(|| hugepage_rs::Box::new([[0u8; SLOT]; SLOTS]))
            .map(|t| t.join());
        match attempt {
            Ok(Ok(slab)) => {
                tracing::info!("receive arena: {} KiB on a hugepage", SLOT * SLOTS / 1024);
                Arena {
                    storage: Storage::Huge(slab),
                }
            }
            _ => {
                tracing::warn!("receive arena: hugepage mapping failed, using normal pages");
                Arena::normal()
            }
        }
    }

    /// An arena on normal pages.
    pub fn normal() -> Arena {
        Arena {
            storage: Storage::Normal(vec![0u8; SLOT * SLOTS]),
        }
    }

    pub fn pages(&self) -> ArenaPages {
        match self.storage {
            Storage::Huge(_) => ArenaPages::Huge,
            Storage::Normal(_) => ArenaPages::Normal,
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Huge(b) => b.as_flattened(),
            Storage::Normal(v) => v.as_slice(),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Huge(b) => b.as_flattened_mut(),
            Storage::Normal(v) => v.as_mut_slice(),
        }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

/// Asks for a receive buffer of `bytes` (a block arrives as a burst of ~1,100 datagrams):
/// `SO_RCVBUFFORCE` where permitted (root / CAP_NET_ADMIN), else `SO_RCVBUF`, which the kernel
/// caps at `net.core.rmem_max`. Returns the size the kernel reports (it doubles the request
/// for bookkeeping).
pub fn set_recv_buffer(sock: &UdpSocket, bytes: usize) -> io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        setsockopt(sock, sockopt::RcvBuf, &bytes).map_err(io::Error::from)?;
    }
    getsockopt(sock, sockopt::RcvBuf).map_err(io::Error::from)
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Room for one `UDP_GRO` control message (the segment size, a C int).
fn gro_cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(i32)
}

/// Batched receiver over an [`Arena`].
pub struct BatchRecv {
    arena: Arena,
    headers: MultiHeaders<SockaddrStorage>,
    /// Where the next batch starts in the arena (batches rotate through it).
    cursor: usize,
    batch: usize,
    /// `UDP_GRO` is on: 64 KiB slots, each message split by its segment size.
    gro: bool,
    /// The kernel shrank some slot's control-buffer length (`msg_controllen` is in-out and
    /// nix 0.29 does not restore it between calls, nix-rust/nix#2813): rebuild the headers
    /// before the next call, or that slot would lose its segment size.
    stale_cmsg: bool,
    /// Buffers received (one per datagram without GRO, one per coalesced run with it).
    pub messages: u64,
    /// Datagrams handed to the callback.
    pub datagrams: u64,
    /// Coalesced buffers dropped because their segment size did not arrive (control data
    /// cut short): counted, not guessed at.
    pub gro_lost: u64,
    /// Buffers that came without a source address (not IPv4/IPv6): dropped, counted.
    pub no_address: u64,
    /// Reused by [`BatchRecv::recv`] (allocated once).
    scratch: Vec<Datagram>,
}

impl BatchRecv {
    /// Up to `batch` datagrams per call (at most [`MAX_BATCH`]), one per slot, no GRO.
    pub fn new(arena: Arena, batch: usize) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        BatchRecv {
            arena,
            headers: MultiHeaders::preallocate(batch, None),
            cursor: 0,
            batch,
            gro: false,
            stale_cmsg: false,
            messages: 0,
            datagrams: 0,
            gro_lost: 0,
            no_address: 0,
            scratch: Vec::with_capacity(2048),
        }
    }

    /// Like [`BatchRecv::new`], with `UDP_GRO` turned on for `sock` where the kernel has it
    /// (Linux 5.0+); where it refuses, logged, the receiver works as [`BatchRecv::new`]. With
    /// GRO, `batch` counts buffers (at most [`GRO_SLOTS`]), each up to 64 KiB of datagrams.
    pub fn with_gro(sock: &UdpSocket, arena: Arena, batch: usize) -> Self {
        use nix::sys::socket::{setsockopt, sockopt};
        let mut r = BatchRecv::new(arena, batch);
        match setsockopt(sock, sockopt::UdpGroSegment, &true) {
            Ok(()) => {
                r.gro = true;
                r.batch = r.batch.min(GRO_SLOTS);
                r.headers = MultiHeaders::preallocate(r.batch, Some(gro_cmsg_buffer()));
                tracing::info!(
                    buffers = r.batch,
                    "UDP GRO on: up to {} buffers of 64 KiB per recvmmsg",
                    r.batch
                );
            }
            Err(e) => tracing::warn!(
                error = %e,
                "UDP GRO unavailable (setsockopt UDP_GRO refused): one datagram per slot"
            ),
        }
        r
    }

    /// Whether `UDP_GRO` is on.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Buffers one [`BatchRecv::recv`] takes at most (with GRO, each may hold many datagrams).
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn arena_pages(&self) -> ArenaPages {
        self.arena.pages()
    }

    /// One `recvmmsg`: waits (up to the socket's read timeout) for the first datagram, takes
    /// what else is queued up to the batch size, and calls `f(from, datagram)` for each (a
    /// coalesced GRO buffer is split into its datagrams, each with the buffer's source).
    /// Returns how many datagrams; 0 on timeout.
    pub fn recv(
        &mut self,
        sock: &UdpSocket,
        mut f: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let mut got = std::mem::take(&mut self.scratch);
        let n = self.recv_into(sock, &mut got);
        for d in &got {
            f(d.from, self.data(d));
        }
        self.scratch = got;
        n
    }

    /// [`BatchRecv::recv`] without a callback: the datagrams' places in the arena go to `out`
    /// (cleared first), read with [`BatchRecv::data`] until the next receive call. Returns how
    /// many.
    pub fn recv_into(&mut self, sock: &UdpSocket, out: &mut Vec<Datagram>) -> io::Result<usize> {
        out.clear();
        let fd = sock.as_raw_fd();
        let batch = self.batch;
        let (slot, slots) = if self.gro {
            (GRO_SLOT, GRO_SLOTS)
        } else {
            (SLOT, SLOTS)
        };
        if self.cursor + batch > slots {
            self.cursor = 0;
        }
        if self.stale_cmsg {
            // One allocation per system call (not per datagram), only after a call that
            // returned a buffer without a segment size.
            self.headers = MultiHeaders::preallocate(batch, Some(gro_cmsg_buffer()));
            self.stale_cmsg = false;
        }
        let first = self.cursor;
        // (bytes, source, GRO segment size or 0, segment size lost)
        let mut got = [(0usize, None::<SocketAddr>, 0usize, false); MAX_BATCH];
        let gro = self.gro;
        let mut stale = false;
        let n = {
            let Self { arena, headers, .. } = self;
            let region = &mut arena.bytes_mut()[first * slot..(first + batch) * slot];
            let mut chunks = region.chunks_mut(slot);
            let mut iovs: [[IoSliceMut<'_>; 1]; MAX_BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let res = match recvmmsg(
                fd,
                headers,
                iovs[..batch].iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(r) => r,
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(0),
                Err(e) => return Err(io::Error::from(e)),
            };
            let mut n = 0;
            for (entry, msg) in got.iter_mut().zip(res) {
                let mut seg = 0usize;
                let mut lost = false;
                if gro {
                    match msg.cmsgs() {
                        Ok(cmsgs) => {
                            for c in cmsgs {
                                if let ControlMessageOwned::UdpGroSegments(s) = c {
                                    seg = usize::try_from(s).unwrap_or(0);
                                }
                            }
                        }
                        Err(_) => lost = true,
                    }
                    // No control message came back: the kernel set this slot's
                    // msg_controllen to 0.
                    stale |= seg == 0;
                }
                *entry = (
                    msg.bytes,
                    msg.address.as_ref().and_then(to_socket_addr),
                    seg,
                    lost,
                );
                n += 1;
            }
            n
        };
        self.stale_cmsg |= stale;
        self.cursor += batch;
        self.messages += n as u64;
        let mut lost_count = 0u64;
        for (i, &(len, from, seg, lost)) in got[..n].iter().enumerate() {
            let at = (first + i) * slot;
            let len = len.min(slot);
            let Some(from) = from else {
                self.no_address += 1;
                continue;
            };
            if seg > 0 && len > seg {
                let mut off = 0;
                while off < len {
                    let l = seg.min(len - off);
                    out.push(Datagram {
                        from,
                        at: at + off,
                        len: l,
                    });
                    off += l;
                }
            } else if lost && len > photon_protocol::wire::MAX_DATAGRAM {
                // Longer than any one datagram and no segment size: a coalesced buffer
                // that cannot be split safely.
                lost_count += 1;
            } else {
                out.push(Datagram { from, at, len });
            }
        }
        self.gro_lost += lost_count;
        self.datagrams += out.len() as u64;
        Ok(out.len())
    }

    /// The bytes of a datagram the last [`BatchRecv::recv_into`] returned (empty for one that
    /// is not in the arena).
    #[inline]
    pub fn data(&self, d: &Datagram) -> &[u8] {
        self.arena.bytes().get(d.at..d.at + d.len).unwrap_or(&[])
    }
}

/// Where one received datagram is: its source and its place in the arena
/// ([`BatchRecv::data`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddr,
    at: usize,
    pub len: usize,
}

/// What one [`GatherSend::send`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Messages the kernel took, and their bytes.
    pub sent: usize,
    pub bytes: usize,
    /// Messages it refused (each skipped, not retried).
    pub refused: usize,
}

/// Gather sends for zero-copy fan-out: each message is two parts (its own header, a payload
/// it may share with other messages) to its own address, `sendmmsg` after `sendmmsg` until
/// every message went or was refused (a message the kernel refuses, the first of a call, is
/// skipped). The `mmsghdr` array is allocated once; the iovecs once per call (nix ties their
/// borrow to the call).
pub struct GatherSend {
    headers: MultiHeaders<SockaddrStorage>,
    addrs: Vec<Option<SockaddrStorage>>,
    capacity: usize,
}

impl GatherSend {
    /// At most `capacity` messages per system call.
    pub fn new(capacity: usize) -> GatherSend {
        let capacity = capacity.max(1);
        GatherSend {
            headers: MultiHeaders::preallocate(capacity, None),
            addrs: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Sends message `i` = `parts[i][0]` then `parts[i][1]`, to `to[i]`.
    pub fn send(
        &mut self,
        sock: &UdpSocket,
        parts: &[[&[u8]; 2]],
        to: &[SocketAddr],
    ) -> SendReport {
        let mut report = SendReport::default();
        let mut at = 0;
        let mut retries = 0;
        let n = parts.len().min(to.len());
        while at < n {
            let end = n.min(at + self.capacity);
            let iovs: Vec<[IoSlice<'_>; 2]> = parts[at..end]
                .iter()
                .map(|[a, b]| [IoSlice::new(a), IoSlice::new(b)])
                .collect();
            self.addrs.clear();
            self.addrs
                .extend(to[at..end].iter().map(|a| Some(SockaddrStorage::from(*a))));
            let res = sendmmsg(
                sock.as_raw_fd(),
                &mut self.headers,
                &iovs,
                &self.addrs,
                [],
                MsgFlags::empty(),
            )
            .map(|r| r.count());
            match res {
                Ok(sent) => {
                    report.sent += sent;
                    report.bytes += parts[at..at + sent]
                        .iter()
                        .map(|[a, b]| a.len() + b.len())
                        .sum::<usize>();
                    at += sent;
                    if sent == 0 {
                        report.refused += 1;
                        at += 1;
                    }
                }
                Err(Errno::EINTR) if retries < 3 => retries += 1,
                Err(_) => {
                    report.refused += 1;
                    at += 1;
                }
            }
        }
        report
    }
}

/// Batched sender: fill slots with [`BatchSend::slot`] + [`BatchSend::commit`], then
/// [`BatchSend::flush`] with one `sendmmsg` per [`MAX_BATCH`] datagrams.
///
/// With GSO ([`BatchSend::with_gso`]), a run of two or more consecutive datagrams to the same
/// destination, all of one length (the last may be shorter), leaves in one `sendmsg` with
/// `UDP_SEGMENT` (the kernel cuts it back into the same datagrams), and the datagrams between
/// runs in one `sendmmsg`. Where the kernel or the route refuses GSO (no `UDP_SEGMENT`, no
/// checksum offload: `EIO`/`EINVAL`/`ENOPROTOOPT`/`EOPNOTSUPP`), it is turned off, logged, and
/// the same datagrams go out without it.
pub struct BatchSend {
    bufs: Vec<u8>,
    lens: [usize; MAX_BATCH],
    addrs: Vec<Option<SockaddrStorage>>,
    headers: MultiHeaders<SockaddrStorage>,
    n: usize,
    gso: bool,
    /// Datagrams the kernel refused (counted, not retried).
    pub dropped: u64,
    /// `sendmsg` calls that carried a GSO run, and the datagrams in them.
    pub gso_sends: u64,
    pub gso_datagrams: u64,
}

/// Slot size of the send buffers.
const SEND_SLOT: usize = photon_protocol::wire::MAX_DATAGRAM;
/// The most payload bytes one UDP datagram (so one GSO send) carries over IPv4.
const GSO_MAX_BYTES: usize = 65_507;

impl Default for BatchSend {
    fn default() -> Self {
        BatchSend::new()
    }
}

impl BatchSend {
    /// A sender without GSO: one `sendmmsg` per [`MAX_BATCH`] datagrams.
    pub fn new() -> Self {
        BatchSend {
            bufs: vec![0u8; MAX_BATCH * SEND_SLOT],
            lens: [0; MAX_BATCH],
            addrs: Vec::with_capacity(MAX_BATCH),
            headers: MultiHeaders::preallocate(MAX_BATCH, None),
            n: 0,
            gso: false,
            dropped: 0,
            gso_sends: 0,
            gso_datagrams: 0,
        }
    }

    /// A sender that sends runs of equal-size datagrams to one destination with GSO.
    pub fn with_gso() -> Self {
        BatchSend {
            gso: true,
            ..BatchSend::new()
        }
    }

    /// Whether GSO is (still) on.
    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn is_full(&self) -> bool {
        self.n == MAX_BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The next free slot ([`wire::MAX_DATAGRAM`](photon_protocol::wire::MAX_DATAGRAM)
    /// bytes); `None` when full (flush first).
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        (self.n < MAX_BATCH).then(|| &mut self.bufs[self.n * SEND_SLOT..(self.n + 1) * SEND_SLOT])
    }

    /// The slot just written holds `len` bytes for `dst`.
    pub fn commit(&mut self, len: usize, dst: SocketAddr) {
        if self.n < MAX_BATCH {
            self.lens[self.n] = len.min(SEND_SLOT);
            self.addrs.push(Some(SockaddrStorage::from(dst)));
            self.n += 1;
        }
    }

    /// How many datagrams from `i` form a GSO run: same destination, all the first one's
    /// length but the last (which may be shorter), within one UDP datagram's bytes. 1 when
    /// there is no run or GSO is off.
    fn run_at(&self, i: usize) -> usize {
        let seg = self.lens[i];
        if !self.gso || seg == 0 {
            return 1;
        }
        let (mut k, mut bytes) = (1, seg);
        while i + k < self.n
            && self.addrs[i + k] == self.addrs[i]
            && (1..=seg).contains(&self.lens[i + k])
            && bytes + self.lens[i + k] <= GSO_MAX_BYTES
        {
            bytes += self.lens[i + k];
            k += 1;
            if self.lens[i + k - 1] < seg {
                break;
            }
        }
        k
    }

    /// Sends what is queued; returns how many datagrams left.
    pub fn flush(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let mut sent_total = 0;
        let mut i = 0;
        while i < self.n {
            let run = self.run_at(i);
            // (datagrams done, datagrams sent)
            let step = if run >= 2 {
                // Ok(false): GSO refused and now off; the same datagrams go out plainly.
                self.send_run(sock, i, run)
                    .map(|ok| if ok { (run, run) } else { (0, 0) })
            } else {
                // Plain datagrams up to the next run (all of them with GSO off).
                let mut end = i + 1;
                while end < self.n && self.run_at(end) < 2 {
                    end += 1;
                }
                self.send_plain(sock, i, end).map(|sent| (end - i, sent))
            };
            match step {
                Ok((done, sent)) => {
                    i += done;
                    sent_total += sent;
                }
                Err(e) => {
                    // The rest of this batch is dropped (counted); the protocol's FEC and
                    // repair requests cover lost datagrams.
                    self.dropped += (self.n - i) as u64;
                    self.reset();
                    return if sent_total > 0 {
                        Ok(sent_total)
                    } else {
                        Err(io::Error::from(e))
                    };
                }
            }
        }
        self.reset();
        Ok(sent_total)
    }

    /// One `sendmsg` with `UDP_SEGMENT` for datagrams `i..i + run`. `Ok(true)`: sent;
    /// `Ok(false)`: GSO refused, now off.
    fn send_run(&mut self, sock: &UdpSocket, i: usize, run: usize) -> Result<bool, Errno> {
        use nix::sys::socket::sendmsg;
        let seg = u16::try_from(self.lens[i]).unwrap_or(u16::MAX);
        loop {
            let (bufs, lens) = (&self.bufs, &self.lens);
            let iovs: [IoSlice<'_>; MAX_BATCH] = std::array::from_fn(|k| {
                let at = (i + k).min(MAX_BATCH - 1) * SEND_SLOT;
                let len = if k < run { lens[i + k] } else { 0 };
                IoSlice::new(&bufs[at..at + len])
            });
            let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
            match sendmsg(
                sock.as_raw_fd(),
                &iovs[..run],
                &cmsg,
                MsgFlags::empty(),
                self.addrs[i].as_ref(),
            ) {
                Ok(_) => {
                    self.gso_sends += 1;
                    self.gso_datagrams += run as u64;
                    return Ok(true);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if wait_writable(sock) => continue,
                Err(e @ (Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)) => {
                    tracing::warn!(error = %e, "UDP GSO refused (UDP_SEGMENT): sending datagrams one by one");
                    self.gso = false;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `sendmmsg` for datagrams `start..end` (as many calls as the kernel needs). Returns how
    /// many left; what the kernel took none of is counted as dropped.
    fn send_plain(
        &mut self,
        sock: &UdpSocket,
        mut start: usize,
        end: usize,
    ) -> Result<usize, Errno> {
        let fd = sock.as_raw_fd();
        let mut sent_total = 0;
        while start < end {
            let (bufs, lens) = (&self.bufs, &self.lens);
            let iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|k| {
                let i = start + k;
                let len = if i < end { lens[i] } else { 0 };
                let at = i.min(MAX_BATCH - 1) * SEND_SLOT;
                [IoSlice::new(&bufs[at..at + len])]
            });
            let cmsgs: [ControlMessage<'_>; 0] = [];
            let sent = match sendmmsg(
                fd,
                &mut self.headers,
                iovs[..end - start].iter(),
                &self.addrs[start..end],
                cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(r) => r.count(),
                Err(Errno::EINTR) => continue,
                // A non-blocking socket with a full send buffer: wait until it drains (as a
                // blocking socket would), up to SEND_STALL, then drop what is left.
                Err(Errno::EAGAIN) if wait_writable(sock) => continue,
                Err(e) if sent_total == 0 => return Err(e),
                Err(_) => 0,
            };
            if sent == 0 {
                self.dropped += (end - start) as u64;
                break;
            }
            sent_total += sent;
            start += sent;
        }
        Ok(sent_total)
    }

    fn reset(&mut self) {
        self.n = 0;
        self.addrs.clear();
    }
}

/// Sends `buf` to `dst` in one `sendmsg` with `UDP_SEGMENT` (GSO): the kernel cuts it into
/// datagrams of `segment` bytes (the last may be shorter). At most 64 segments (the kernel
/// takes up to 64 or 128 by version) and 65,507 bytes in all. Returns the bytes sent.
pub fn send_segments(
    sock: &UdpSocket,
    dst: SocketAddr,
    segment: u16,
    buf: &[u8],
) -> io::Result<usize> {
    use nix::sys::socket::sendmsg;
    let iov = [IoSlice::new(buf)];
    let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
    let to = SockaddrStorage::from(dst);
    sendmsg(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), Some(&to)).map_err(io::Error::from)
}

/// Longest wait for a full send buffer to drain before datagrams are dropped, ms.
const SEND_STALL_MS: u8 = 100;

/// Waits until `sock` can take a datagram (POLLOUT), up to [`SEND_STALL_MS`]; false if not.
fn wait_writable(sock: &UdpSocket) -> bool {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
    matches!(poll(&mut fds, SEND_STALL_MS), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Sends `count` datagrams from a fresh socket to another, `i` (big-endian) in the first 4
    /// bytes of datagram `i`, `4 + i % 7` bytes long, in batches of [`MAX_BATCH`]; receives
    /// them with the receiver `make_rx` makes for that socket (at most `max_per_call` per call) and checks order, contents, lengths
    /// and the source.
    fn numbered_round_trip(
        make_rx: impl FnOnce(&UdpSocket) -> BatchRecv,
        count: u32,
        max_per_call: usize,
    ) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut rx = make_rx(&b);
        let mut tx = BatchSend::new();
        for i in 0..count {
            if tx.is_full() {
                tx.flush(&a).unwrap();
            }
            let slot = tx.slot().unwrap();
            slot[..4].copy_from_slice(&i.to_be_bytes());
            tx.commit(4 + (i as usize % 7), b.local_addr().unwrap());
        }
        tx.flush(&a).unwrap();
        let mut seen = Vec::new();
        while seen.len() < count as usize {
            let n = rx
                .recv(&b, |from, d| {
                    assert_eq!(from, a.local_addr().unwrap());
                    seen.push((u32::from_be_bytes(d[..4].try_into().unwrap()), d.len()));
                })
                .unwrap();
            assert!(n > 0, "timed out after {} datagrams", seen.len());
            assert!(n <= max_per_call);
        }
        for (i, &(v, len)) in seen.iter().enumerate() {
            assert_eq!((v, len), (i as u32, 4 + i % 7));
        }
        assert_eq!(tx.dropped, 0);
    }

    #[test]
    fn batch_send_and_receive_on_loopback() {
        numbered_round_trip(|_| BatchRecv::new(Arena::normal(), 32), 100, 32);
    }

    fn gso_send(tx: &UdpSocket, dst: SocketAddr, seg: u16, payload: &[u8]) -> usize {
        send_segments(tx, dst, seg, payload).unwrap()
    }

    /// 40 segments: 39 of 100 bytes and a last one of 37, each filled with its index.
    fn gso_payload() -> Vec<u8> {
        let mut p = Vec::new();
        for i in 0..40u8 {
            let len = if i == 39 { 37 } else { 100 };
            p.extend(std::iter::repeat_n(i, len));
        }
        p
    }

    fn receive_gso_burst(gro: bool) -> (Vec<Vec<u8>>, BatchRecv) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut rx = if gro {
            BatchRecv::with_gro(&b, Arena::normal(), 32)
        } else {
            BatchRecv::new(Arena::normal(), 32)
        };
        let dst = b.local_addr().unwrap();
        // A plain datagram first: the slot that takes it comes back without a control
        // message, and the burst after it must still get its segment size.
        a.send_to(&[0xee; 9], dst).unwrap();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let n = rx
            .recv(&b, |from, d| {
                assert_eq!(from, a.local_addr().unwrap());
                seen.push(d.to_vec());
            })
            .unwrap();
        assert_eq!((n, seen.as_slice()), (1, &[vec![0xee; 9]][..]));
        seen.clear();
        let payload = gso_payload();
        assert_eq!(gso_send(&a, dst, 100, &payload), payload.len());
        while seen.len() < 40 {
            let n = rx
                .recv(&b, |from, d| {
                    assert_eq!(from, a.local_addr().unwrap());
                    seen.push(d.to_vec());
                })
                .unwrap();
            assert!(n > 0, "timed out after {} datagrams", seen.len());
        }
        (seen, rx)
    }

    fn check_segments(seen: &[Vec<u8>]) {
        assert_eq!(seen.len(), 40);
        for (i, d) in seen.iter().enumerate() {
            let len = if i == 39 { 37 } else { 100 };
            assert_eq!(d, &vec![i as u8; len], "datagram {i}");
        }
    }

    #[test]
    fn gro_splits_a_gso_burst_into_its_datagrams() {
        let (seen, rx) = receive_gso_burst(true);
        check_segments(&seen);
        assert_eq!(rx.datagrams, 41);
        assert_eq!(rx.gro_lost, 0);
        if rx.gro() {
            // Loopback hands the GSO buffer up whole: one message for the 40 datagrams.
            assert_eq!(
                rx.messages, 2,
                "GRO on but the burst came as separate datagrams"
            );
        } else {
            eprintln!("UDP_GRO refused by this kernel: checked the fallback only");
        }
    }

    #[test]
    fn without_gro_a_gso_burst_arrives_as_datagrams() {
        let (seen, rx) = receive_gso_burst(false);
        check_segments(&seen);
        assert!(!rx.gro());
        assert_eq!((rx.messages, rx.datagrams), (41, 41));
    }

    #[test]
    fn gro_receiver_takes_plain_datagrams_unchanged() {
        // The batch test's traffic through a GRO receiver: every call returns buffers without
        // a segment size (and rebuilds its headers), bytes unchanged. (The source check and
        // the no-drop check of the helper come on top of what this test asserted before.)
        numbered_round_trip(
            |b| BatchRecv::with_gro(b, Arena::normal(), 16),
            200,
            MAX_BATCH,
        );
    }

    #[test]
    fn gso_sender_sends_runs_and_keeps_every_datagram() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&b, &c] {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        let (bd, cd) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        // (destination, length): two singles, a run of 29 × 100 + 37 to b, a run of 10 to c,
        // a single, a run of 5 × 200 to b.
        let mut plan: Vec<(SocketAddr, usize)> = vec![(bd, 8), (bd, 9)];
        plan.extend(std::iter::repeat_n((bd, 100), 29));
        plan.push((bd, 37));
        plan.extend(std::iter::repeat_n((cd, 100), 10));
        plan.push((bd, 50));
        plan.extend(std::iter::repeat_n((bd, 200), 5));
        let mut tx = BatchSend::with_gso();
        for (seq, &(dst, len)) in plan.iter().enumerate() {
            let slot = tx.slot().unwrap();
            slot[..len].fill(seq as u8);
            tx.commit(len, dst);
        }
        assert_eq!(tx.flush(&a).unwrap(), plan.len());
        assert_eq!(tx.dropped, 0);
        if tx.gso() {
            assert_eq!((tx.gso_sends, tx.gso_datagrams), (3, 45));
        } else {
            eprintln!("UDP_SEGMENT refused by this kernel: checked the fallback only");
        }
        for (sock, addr) in [(&b, bd), (&c, cd)] {
            let want: Vec<Vec<u8>> = plan
                .iter()
                .enumerate()
                .filter(|(_, &(d, _))| d == addr)
                .map(|(seq, &(_, len))| vec![seq as u8; len])
                .collect();
            let mut rx = BatchRecv::new(Arena::normal(), 64);
            let mut seen = Vec::new();
            while seen.len() < want.len() {
                let n = rx.recv(sock, |_, d| seen.push(d.to_vec())).unwrap();
                assert!(n > 0, "timed out after {} datagrams", seen.len());
            }
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn arena_falls_back_or_maps_a_hugepage() {
        let a = Arena::new();
        // Whichever it got, the arena is usable end to end.
        let mut rx = BatchRecv::new(a, 8);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        assert_eq!(rx.recv(&s, |_, _| {}).unwrap(), 0);
        let _ = rx.arena_pages();
    }
}
