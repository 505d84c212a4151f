//! Batched UDP I/O: `recvmmsg`/`sendmmsg` through `nix`'s safe API, and the receive-buffer
//! arena (on a hugepage where the system has one free, else normal pages, logged).
//!
//! One `recvmmsg` fills up to [`MAX_BATCH`] slots of the arena and returns at the first
//! datagram (`MSG_WAITFORONE`), so a busy socket is drained in bursts of one system call each
//! while an idle one still answers within the socket's read timeout. Nothing here allocates per
//! datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use std::io::{IoSlice, IoSliceMut};

/// Bytes per arena slot: a Photon datagram is at most 1232 bytes; a larger datagram is cut
/// (and then fails its length check) instead of spilling into the next slot.
pub const SLOT: usize = 2048;
/// Slots in the arena: 1024 × 2 KiB = 2 MiB, one x86-64 hugepage.
pub const SLOTS: usize = 1024;
/// Most datagrams per system call.
pub const MAX_BATCH: usize = 64;

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

/// Batched receiver over an [`Arena`].
pub struct BatchRecv {
    arena: Arena,
    headers: MultiHeaders<SockaddrStorage>,
    /// Where the next batch starts in the arena (batches rotate through it).
    cursor: usize,
    batch: usize,
}

impl BatchRecv {
    /// Up to `batch` datagrams per call (at most [`MAX_BATCH`]).
    pub fn new(arena: Arena, batch: usize) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        BatchRecv {
            arena,
            headers: MultiHeaders::preallocate(batch, None),
            cursor: 0,
            batch,
        }
    }

    pub fn arena_pages(&self) -> ArenaPages {
        self.arena.pages()
    }

    /// One `recvmmsg`: waits (up to the socket's read timeout) for the first datagram, takes
    /// what else is queued up to the batch size, and calls `f(from, datagram)` for each.
    /// Returns how many; 0 on timeout.
    pub fn recv(
        &mut self,
        sock: &UdpSocket,
        mut f: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let fd = sock.as_raw_fd();
        let batch = self.batch;
        if self.cursor + batch > SLOTS {
            self.cursor = 0;
        }
        let first = self.cursor;
        let mut got = [(0usize, None::<SocketAddr>); MAX_BATCH];
        let n = {
            let Self { arena, headers, .. } = self;
            let region = &mut arena.bytes_mut()[first * SLOT..(first + batch) * SLOT];
            let mut chunks = region.chunks_mut(SLOT);
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
            for (slot, msg) in got.iter_mut().zip(res) {
                *slot = (msg.bytes, msg.address.as_ref().and_then(to_socket_addr));
                n += 1;
            }
            n
        };
        self.cursor += batch;
        let bytes = self.arena.bytes_mut();
        for (i, &(len, from)) in got[..n].iter().enumerate() {
            let at = (first + i) * SLOT;
            if let Some(from) = from {
                f(from, &bytes[at..at + len.min(SLOT)]);
            }
        }
        Ok(n)
    }
}

/// Batched sender: fill slots with [`BatchSend::slot`] + [`BatchSend::commit`], then
/// [`BatchSend::flush`] with one `sendmmsg` per [`MAX_BATCH`] datagrams.
pub struct BatchSend {
    bufs: Vec<u8>,
    lens: [usize; MAX_BATCH],
    addrs: Vec<Option<SockaddrStorage>>,
    headers: MultiHeaders<SockaddrStorage>,
    n: usize,
    /// Datagrams the kernel refused (counted, not retried).
    pub dropped: u64,
}

/// Slot size of the send buffers.
const SEND_SLOT: usize = photon_protocol::wire::MAX_DATAGRAM;

impl Default for BatchSend {
    fn default() -> Self {
        BatchSend::new()
    }
}

impl BatchSend {
    pub fn new() -> Self {
        BatchSend {
            bufs: vec![0u8; MAX_BATCH * SEND_SLOT],
            lens: [0; MAX_BATCH],
            addrs: Vec::with_capacity(MAX_BATCH),
            headers: MultiHeaders::preallocate(MAX_BATCH, None),
            n: 0,
            dropped: 0,
        }
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

    /// Sends what is queued; returns how many datagrams left.
    pub fn flush(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let fd = sock.as_raw_fd();
        let mut sent_total = 0;
        let mut start = 0;
        while start < self.n {
            let (bufs, lens, n) = (&self.bufs, &self.lens, self.n);
            let iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|k| {
                let i = start + k;
                let len = if i < n { lens[i] } else { 0 };
                let at = i.min(MAX_BATCH - 1) * SEND_SLOT;
                [IoSlice::new(&bufs[at..at + len])]
            });
            let cmsgs: [ControlMessage<'_>; 0] = [];
            let sent = match sendmmsg(
                fd,
                &mut self.headers,
                iovs[..n - start].iter(),
                &self.addrs[start..self.n],
                cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(r) => r.count(),
                Err(Errno::EINTR) => continue,
                // A non-blocking socket with a full send buffer: wait until it drains (as a
                // blocking socket would), up to SEND_STALL, then drop what is left.
                Err(Errno::EAGAIN) if wait_writable(sock) => continue,
                Err(e) => {
                    // The rest of this batch is dropped (counted); the protocol's FEC and
                    // repair requests cover lost datagrams.
                    self.dropped += (self.n - start) as u64;
                    self.reset();
                    return if sent_total > 0 {
                        Ok(sent_total)
                    } else {
                        Err(io::Error::from(e))
                    };
                }
            };
            if sent == 0 {
                self.dropped += (self.n - start) as u64;
                break;
            }
            sent_total += sent;
            start += sent;
        }
        self.reset();
        Ok(sent_total)
    }

    fn reset(&mut self) {
        self.n = 0;
        self.addrs.clear();
    }
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

    #[test]
    fn batch_send_and_receive_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut tx = BatchSend::new();
        for i in 0..100u32 {
            if tx.is_full() {
                tx.flush(&a).unwrap();
            }
            let slot = tx.slot().unwrap();
            slot[..4].copy_from_slice(&i.to_be_bytes());
            tx.commit(4 + (i as usize % 7), b.local_addr().unwrap());
        }
        tx.flush(&a).unwrap();
        let mut rx = BatchRecv::new(Arena::normal(), 32);
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let n = rx
                .recv(&b, |from, d| {
                    assert_eq!(from, a.local_addr().unwrap());
                    seen.push((u32::from_be_bytes(d[..4].try_into().unwrap()), d.len()));
                })
                .unwrap();
            assert!(n > 0, "timed out after {} datagrams", seen.len());
            assert!(n <= 32);
        }
        for (i, &(v, len)) in seen.iter().enumerate() {
            assert_eq!(v, i as u32);
            assert_eq!(len, 4 + i % 7);
        }
        assert_eq!(tx.dropped, 0);
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
