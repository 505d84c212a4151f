//! [`NodeConnection`]: the thin TCP driver around [`NodePeer`].
//!
//! Two threads per connection: a reader that only reads the socket into a bounded channel, and
//! the loop thread that owns the [`NodePeer`], takes socket bytes and the gateway's calls from
//! that one channel (so a call never waits behind a blocked read), writes what the peer queued,
//! and fires its timers. On any error the connection is closed and opened again after an
//! exponential backoff, reset once a handshake completes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::{Block, Transaction};

use super::{BlockStore, NodeConfig, NodeError, NodeEvent, NodePeer, NodeStats, Role};

/// Exponential backoff between connection attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Start at `initial`, double after each failure, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `initial` (after a connection that completed its handshake).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

impl Default for Backoff {
    /// 250 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

/// What the driver reports: the peer's events, and the connection's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// TCP connected; the handshake starts ([`NodeEvent::Handshaken`] follows).
    Connected(SocketAddr),
    /// An event of the current connection.
    Node(NodeEvent),
    /// The connection failed or was lost; the next attempt is in `reconnect_in`.
    Disconnected {
        error: String,
        reconnect_in: Duration,
    },
    /// A call ([`NodeConnection::announce_tx`], ...) could not be carried out (not connected,
    /// handshake not complete, send buffer full...).
    CallRefused {
        call: &'static str,
        error: NodeError,
    },
}

enum Call {
    AnnounceTx(Transaction),
    SendBlock(Block),
    AnnounceBlock(Block),
    SendCmpctBlock(Block),
    Shutdown,
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::AnnounceTx(_) => "announce_tx",
            Call::SendBlock(_) => "send_block",
            Call::AnnounceBlock(_) => "announce_block",
            Call::SendCmpctBlock(_) => "send_cmpct_block",
            Call::Shutdown => "shutdown",
        }
    }
}

enum Input {
    Call(Call),
    /// Bytes read by the reader of connection number `.0`.
    Bytes(u64, Vec<u8>),
    /// The reader of connection `.0` hit end of stream or an error.
    ReadEnd(u64, String),
}

/// Socket read size; with [`INPUT_QUEUE`] it bounds what the reader holds ahead of the loop.
const READ_CHUNK: usize = 64 * 1024;
const INPUT_QUEUE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that cannot progress for this long (the node stopped reading) drops the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Counters are published to [`NodeConnection::stats`] at most this often.
const STATS_EVERY: Duration = Duration::from_millis(500);

/// A connection to the node at a fixed address, kept up by a background thread.
///
/// Drain [`NodeConnection::recv_event`] (or [`NodeConnection::events`]) continuously: events
/// queue without bound until taken.
pub struct NodeConnection {
    input: SyncSender<Input>,
    events: Receiver<ConnectionEvent>,
    stats: Arc<Mutex<NodeStats>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeConnection {
    /// Start connecting to the node at `addr` (outbound: we send `version` first), and keep
    /// reconnecting with `backoff` until [`NodeConnection::shutdown`] or drop.
    pub fn connect(addr: SocketAddr, config: NodeConfig, backoff: Backoff) -> NodeConnection {
        Self::connect_inner(addr, config, backoff, None)
    }

    /// As [`NodeConnection::connect`], and after queueing each event the background thread
    /// sends one byte on `waker` (non-blocking; a full socket is ignored: the reader has bytes
    /// to wake it already). The gateway's event loop polls the other end of the pair beside its
    /// UDP socket, so a block from the node is handled at once rather than after the current
    /// wait.
    pub fn connect_with_waker(
        addr: SocketAddr,
        config: NodeConfig,
        backoff: Backoff,
        waker: UnixDatagram,
    ) -> NodeConnection {
        let _ = waker.set_nonblocking(true);
        Self::connect_inner(addr, config, backoff, Some(waker))
    }

    fn connect_inner(
        addr: SocketAddr,
        config: NodeConfig,
        backoff: Backoff,
        waker: Option<UnixDatagram>,
    ) -> NodeConnection {
        let (input_tx, input_rx) = mpsc::sync_channel(INPUT_QUEUE);
        let (event_tx, event_rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(NodeStats::default()));
        let driver = Driver {
            addr,
            config,
            backoff,
            input_tx: input_tx.clone(),
            input_rx,
            events: event_tx,
            waker,
            stats: stats.clone(),
            generation: 0,
            blocks: None,
        };
        let thread = std::thread::Builder::new()
            .name("photon-node".into())
            .spawn(move || driver.run())
            .ok();
        NodeConnection {
            input: input_tx,
            events: event_rx,
            stats,
            thread,
        }
    }

    /// The next event, waiting up to `timeout`.
    pub fn recv_event(&self, timeout: Duration) -> Option<ConnectionEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The event channel itself.
    pub fn events(&self) -> &Receiver<ConnectionEvent> {
        &self.events
    }

    /// See [`NodePeer::announce_tx`]. Refusals come back as [`ConnectionEvent::CallRefused`].
    pub fn announce_tx(&self, tx: Transaction) {
        self.call(Call::AnnounceTx(tx));
    }

    /// See [`NodePeer::send_block`].
    pub fn send_block(&self, block: Block) {
        self.call(Call::SendBlock(block));
    }

    /// See [`NodePeer::announce_block`].
    pub fn announce_block(&self, block: Block) {
        self.call(Call::AnnounceBlock(block));
    }

    /// See [`NodePeer::send_cmpct_block`].
    pub fn send_cmpct_block(&self, block: Block) {
        self.call(Call::SendCmpctBlock(block));
    }

    /// Counters of the current (or last) connection, published by the driver thread every
    /// [`STATS_EVERY`] (500 ms) and when a connection ends.
    pub fn stats(&self) -> NodeStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Close the connection and stop reconnecting; waits for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn call(&self, call: Call) {
        // Fails only once the driver thread has exited (after shutdown).
        let _ = self.input.send(Input::Call(call));
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.input.send(Input::Call(Call::Shutdown));
            let _ = t.join();
        }
    }
}

impl Drop for NodeConnection {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Driver {
    addr: SocketAddr,
    config: NodeConfig,
    backoff: Backoff,
    input_tx: SyncSender<Input>,
    input_rx: Receiver<Input>,
    events: mpsc::Sender<ConnectionEvent>,
    /// Poked after each event (see [`NodeConnection::connect_with_waker`]).
    waker: Option<UnixDatagram>,
    stats: Arc<Mutex<NodeStats>>,
    generation: u64,
    /// The blocks the node may ask for, carried from one connection to the next.
    blocks: Option<BlockStore>,
}

/// How a session ended.
enum End {
    Shutdown,
    Lost(String),
}

impl Driver {
    fn run(mut self) {
        loop {
            let (error, handshaken) = match TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            {
                Err(e) => (format!("connect to {}: {e}", self.addr), false),
                Ok(stream) => match self.session(stream) {
                    (End::Shutdown, _) => return,
                    (End::Lost(e), handshaken) => (e, handshaken),
                },
            };
            if handshaken {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            self.emit(ConnectionEvent::Disconnected {
                error,
                reconnect_in: delay,
            });
            if self.wait(delay) {
                return;
            }
        }
    }

    fn emit(&self, ev: ConnectionEvent) {
        let _ = self.events.send(ev);
        if let Some(w) = &self.waker {
            let _ = w.send(&[1]);
        }
    }

    /// Wait `delay` between attempts. Blocks for the node are kept (the next connection
    /// announces the tip); transactions are refused. True on shutdown.
    fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.input_rx.recv_timeout(left) {
                Ok(Input::Call(Call::Shutdown)) | Err(RecvTimeoutError::Disconnected) => {
                    return true
                }
                Ok(Input::Call(
                    Call::SendBlock(b) | Call::AnnounceBlock(b) | Call::SendCmpctBlock(b),
                )) => {
                    let store = self.store();
                    store.insert(b, true);
                }
                Ok(Input::Call(c)) => self.emit(ConnectionEvent::CallRefused {
                    call: c.name(),
                    error: NodeError::NotHandshaken,
                }),
                Ok(_) => {} // bytes from a closed connection
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// One connection, until it fails or shutdown. Returns whether it completed a handshake.
    fn session(&mut self, stream: TcpStream) -> (End, bool) {
        self.generation += 1;
        let generation = self.generation;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let reader = match stream.try_clone() {
            Ok(r) => r,
            Err(e) => return (End::Lost(format!("clone socket: {e}")), false),
        };
        let input = self.input_tx.clone();
        let reader = std::thread::Builder::new()
            .name("photon-node-rx".into())
            .spawn(move || read_loop(reader, input, generation));
        // The reader is not joined: it may sit in a full channel's send until `wait` drains
        // it; it then sees the shut-down socket and exits on its own.
        if let Err(e) = reader {
            return (End::Lost(format!("spawn reader: {e}")), false);
        }
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let blocks = self.store_taken();
        let mut peer = NodePeer::new(
            self.config.clone(),
            Role::Outbound,
            self.addr,
            Instant::now(),
            unix_time,
            rand::random(),
        )
        .with_blocks(blocks);
        self.emit(ConnectionEvent::Connected(self.addr));
        let end = self.drive(&mut peer, &stream, generation);
        let _ = stream.shutdown(Shutdown::Both);
        self.publish(&peer);
        self.blocks = Some(peer.take_blocks());
        (end, peer.is_handshaken())
    }

    fn store(&mut self) -> &mut BlockStore {
        let bytes = self.config.block_store_bytes;
        self.blocks.get_or_insert_with(|| BlockStore::new(bytes))
    }

    fn store_taken(&mut self) -> BlockStore {
        self.store();
        self.blocks
            .take()
            .unwrap_or_else(|| BlockStore::new(self.config.block_store_bytes))
    }

    fn publish(&self, peer: &NodePeer) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = peer.stats().clone();
    }

    fn drive(&mut self, peer: &mut NodePeer, mut stream: &TcpStream, generation: u64) -> End {
        let mut published = Instant::now();
        loop {
            while let Some(ev) = peer.poll_event() {
                self.emit(ConnectionEvent::Node(ev));
            }
            let out = peer.poll_transmit();
            if !out.is_empty() {
                let n = out.len();
                if let Err(e) = stream.write_all(out) {
                    return End::Lost(format!("write: {e}"));
                }
                peer.advance_transmit(n);
            }
            // Housekeeping: counters are published here only, at most every STATS_EVERY.
            if published.elapsed() >= STATS_EVERY {
                self.publish(peer);
                published = Instant::now();
            }
            let wait = peer
                .poll_timeout()
                .saturating_duration_since(Instant::now())
                .min(STATS_EVERY);
            let result = match self.input_rx.recv_timeout(wait) {
                Ok(Input::Bytes(g, bytes)) if g == generation => {
                    peer.handle_bytes(&bytes, Instant::now())
                }
                Ok(Input::ReadEnd(g, e)) if g == generation => return End::Lost(e),
                Ok(Input::Bytes(..) | Input::ReadEnd(..)) => Ok(()),
                Ok(Input::Call(Call::Shutdown)) | Err(RecvTimeoutError::Disconnected) => {
                    return End::Shutdown
                }
                Ok(Input::Call(call)) => {
                    let name = call.name();
                    let r = match call {
                        Call::AnnounceTx(tx) => peer.announce_tx(tx).map(|_| ()),
                        Call::SendBlock(b) => peer.send_block(b),
                        Call::AnnounceBlock(b) => peer.announce_block(b),
                        Call::SendCmpctBlock(b) => peer.send_cmpct_block(b),
                        Call::Shutdown => Ok(()),
                    };
                    if let Err(error) = r {
                        self.emit(ConnectionEvent::CallRefused { call: name, error });
                    }
                    Ok(())
                }
                Err(RecvTimeoutError::Timeout) => peer.handle_timeout(Instant::now()),
            };
            if let Err(e) = result {
                // What the peer reported before the failure still reaches the gateway.
                while let Some(ev) = peer.poll_event() {
                    self.emit(ConnectionEvent::Node(ev));
                }
                return End::Lost(e.to_string());
            }
        }
    }
}

fn read_loop(mut stream: TcpStream, input: SyncSender<Input>, generation: u64) {
    loop {
        let mut buf = vec![0u8; READ_CHUNK];
        match stream.read(&mut buf) {
            Ok(0) => {
                let _ = input.send(Input::ReadEnd(
                    generation,
                    "node closed the connection".into(),
                ));
                return;
            }
            Ok(n) => {
                buf.truncate(n);
                if input.send(Input::Bytes(generation, buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = input.send(Input::ReadEnd(generation, format!("read: {e}")));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let got: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
