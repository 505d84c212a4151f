//! A seeded impaired link: delay, jitter, loss, reordering and duplication, as netem does
//! (netem is not available on every test machine).
//!
//! [`Impairer`] is sans-IO (quinn style): [`Impairer::handle_datagram`] takes a datagram with
//! `now`, [`Impairer::poll_transmit`] hands out the datagrams due at `now`,
//! [`Impairer::poll_timeout`] says when the next one is due. [`UdpImpairer`] drives two of them
//! (one per direction) between UDP sockets on threads.
//!
//! The model, per datagram: lost with probability `loss`; otherwise due after
//! `delay + U(-jitter, +jitter)` (never negative); with probability `reorder` it skips the delay
//! and is due at once (it overtakes what is queued, as netem's `reorder`); with probability
//! `duplicate` a copy is queued with its own draw of the delay. Jitter alone also reorders
//! (netem with jitter and no rate does too). The queue holds at most `max_queue` datagrams;
//! past that, arrivals are dropped and counted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use photon_ops::threads::{nothing_read, StopThreads};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Settings of one direction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImpairConfig {
    /// Base one-way delay.
    pub delay: Duration,
    /// Uniform jitter: each datagram's delay is `delay ± jitter` (at least zero).
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is sent at once, ahead of those being delayed.
    pub reorder: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Datagrams queued at most; arrivals past this are dropped (counted).
    pub max_queue: usize,
    pub seed: u64,
}

impl Default for ImpairConfig {
    /// A perfect link: no delay, no loss.
    fn default() -> Self {
        ImpairConfig {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            max_queue: 100_000,
            seed: 0,
        }
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImpairStats {
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
    /// Dropped because `max_queue` datagrams were already queued.
    pub queue_full: u64,
    pub sent: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    due: Instant,
    /// Arrival order: ties go out in the order they came.
    seq: u64,
    data: Vec<u8>,
}

/// One direction of an impaired link. See the module docs.
#[derive(Debug)]
pub struct Impairer {
    config: ImpairConfig,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    stats: ImpairStats,
}

impl Impairer {
    pub fn new(config: ImpairConfig) -> Self {
        Impairer {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            queue: BinaryHeap::new(),
            seq: 0,
            stats: ImpairStats::default(),
        }
    }

    pub fn config(&self) -> &ImpairConfig {
        &self.config
    }

    pub fn stats(&self) -> &ImpairStats {
        &self.stats
    }

    /// Datagrams waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A datagram arrived at `now`.
    pub fn handle_datagram(&mut self, now: Instant, data: Vec<u8>) {
        self.stats.received += 1;
        if self.rng.gen_bool(self.config.loss.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return;
        }
        let copy = if self.rng.gen_bool(self.config.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated += 1;
            Some(data.clone())
        } else {
            None
        };
        self.enqueue(now, data);
        if let Some(copy) = copy {
            self.enqueue(now, copy);
        }
    }

    fn enqueue(&mut self, now: Instant, data: Vec<u8>) {
        if self.queue.len() >= self.config.max_queue {
            self.stats.queue_full += 1;
            return;
        }
        let due = if self.rng.gen_bool(self.config.reorder.clamp(0.0, 1.0)) {
            self.stats.reordered += 1;
            now
        } else {
            now + self.draw_delay()
        };
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            due,
            seq: self.seq,
            data,
        }));
    }

    fn draw_delay(&mut self) -> Duration {
        let j = self.config.jitter.as_nanos() as i128;
        let base = self.config.delay.as_nanos() as i128;
        let d = if j > 0 {
            base + self.rng.gen_range(-j..=j)
        } else {
            base
        };
        Duration::from_nanos(d.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// The next datagram due at or before `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.queue.peek()?.0.due > now {
            return None;
        }
        self.stats.sent += 1;
        self.queue.pop().map(|Reverse(q)| q.data)
    }

    /// When the next datagram is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(q)| q.due)
    }
}

/// A UDP forwarder with an [`Impairer`] in each direction: datagrams to `listen` go to
/// `forward`; replies from `forward` go back to the last address that sent to `listen`.
/// One thread per direction; [`UdpImpairer::stop`] (or drop) ends them.
pub struct UdpImpairer {
    threads: StopThreads,
    listen_addr: SocketAddr,
    stats: [Arc<Mutex<ImpairStats>>; 2],
}

/// Receive buffer: the largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Longest a direction's thread waits in `recv` (how soon it notices `stop`).
const POLL: Duration = Duration::from_millis(20);

impl UdpImpairer {
    /// Binds `listen` and starts forwarding to `forward`: `to_forward` impairs the way there,
    /// `to_client` the way back.
    pub fn spawn(
        listen: SocketAddr,
        forward: SocketAddr,
        to_forward: ImpairConfig,
        to_client: ImpairConfig,
    ) -> io::Result<UdpImpairer> {
        let front = UdpSocket::bind(listen)?;
        let unspecified: SocketAddr = if forward.is_ipv4() {
            "0.0.0.0:0".parse().map_err(io::Error::other)?
        } else {
            "[::]:0".parse().map_err(io::Error::other)?
        };
        let back = UdpSocket::bind(unspecified)?;
        back.connect(forward)?;
        let listen_addr = front.local_addr()?;
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let mut threads = StopThreads::new();
        let stop = threads.flag();
        let stats = [
            Arc::new(Mutex::new(ImpairStats::default())),
            Arc::new(Mutex::new(ImpairStats::default())),
        ];
        let there = Direction {
            rx: front.try_clone()?,
            tx: back.try_clone()?,
            impairer: Impairer::new(to_forward),
            client: client.clone(),
            learn_client: true,
            stop: stop.clone(),
            stats: stats[0].clone(),
        };
        let back_again = Direction {
            rx: back,
            tx: front,
            impairer: Impairer::new(to_client),
            client,
            learn_client: false,
            stop: stop.clone(),
            stats: stats[1].clone(),
        };
        for (name, d) in [("impair-fwd", there), ("impair-back", back_again)] {
            threads.spawn(name, move || d.run())?;
        }
        Ok(UdpImpairer {
            threads,
            listen_addr,
            stats,
        })
    }

    /// The address clients send to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Counters (towards `forward`, towards the client), as of the last datagram handled.
    pub fn stats(&self) -> (ImpairStats, ImpairStats) {
        let get =
            |s: &Arc<Mutex<ImpairStats>>| s.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (get(&self.stats[0]), get(&self.stats[1]))
    }

    /// Stops both threads and waits for them; returns the final counters.
    pub fn stop(mut self) -> (ImpairStats, ImpairStats) {
        self.threads.stop();
        self.stats()
    }
}

struct Direction {
    rx: UdpSocket,
    /// Connected to `forward` (way there) or unconnected (way back: sends to the client).
    tx: UdpSocket,
    impairer: Impairer,
    client: Arc<Mutex<Option<SocketAddr>>>,
    learn_client: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ImpairStats>>,
}

impl Direction {
    fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            while let Some(d) = self.impairer.poll_transmit(now) {
                self.send(&d);
            }
            let wait = self
                .impairer
                .poll_timeout()
                .map_or(POLL, |due| due.saturating_duration_since(now).min(POLL))
                .max(Duration::from_micros(50));
            if self.rx.set_read_timeout(Some(wait)).is_err() {
                break;
            }
            match self.rx.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if self.learn_client {
                        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
                    }
                    self.impairer
                        .handle_datagram(Instant::now(), buf[..n].to_vec());
                    *self.stats.lock().unwrap_or_else(PoisonError::into_inner) =
                        self.impairer.stats().clone();
                }
                Err(e) if nothing_read(&e) => {}
                // ICMP port unreachable from a peer not up yet: keep going.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(_) => break,
            }
        }
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = self.impairer.stats().clone();
    }

    fn send(&mut self, d: &[u8]) {
        // A failed send is a lost datagram on a real link too; counted by the receiver's gap.
        if self.learn_client {
            let _ = self.tx.send(d);
        } else if let Some(to) = *self.client.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = self.tx.send_to(d, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` numbered datagrams 1 ms apart and drains everything; returns the numbers in
    /// the order they came out, with their delays.
    fn run(config: ImpairConfig, n: u32) -> (Vec<u32>, Vec<Duration>, ImpairStats) {
        let mut imp = Impairer::new(config);
        let t0 = Instant::now();
        let mut sent_at = Vec::new();
        let mut order = Vec::new();
        let mut delays = Vec::new();
        let mut drain = |imp: &mut Impairer, now: Instant, sent_at: &Vec<Instant>| {
            while let Some(d) = imp.poll_transmit(now) {
                let i = u32::from_le_bytes(d[..4].try_into().unwrap());
                order.push(i);
                delays.push(now - sent_at[i as usize]);
            }
        };
        for i in 0..n {
            let now = t0 + Duration::from_millis(u64::from(i));
            sent_at.push(now);
            imp.handle_datagram(now, i.to_le_bytes().to_vec());
            // Drain at every due time up to the next arrival, as a driver would.
            let next = now + Duration::from_millis(1);
            while let Some(due) = imp.poll_timeout().filter(|d| *d < next) {
                drain(&mut imp, due, &sent_at);
            }
        }
        while let Some(due) = imp.poll_timeout() {
            drain(&mut imp, due, &sent_at);
        }
        let stats = imp.stats().clone();
        (order, delays, stats)
    }

    #[test]
    fn perfect_link_keeps_order_and_timing() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(5),
            ..ImpairConfig::default()
        };
        let (order, delays, stats) = run(cfg, 1000);
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
        assert!(delays.iter().all(|d| *d == Duration::from_millis(5)));
        assert_eq!(stats.sent, 1000);
    }

    #[test]
    fn loss_rate_within_tolerance() {
        let cfg = ImpairConfig {
            loss: 0.1,
            seed: 7,
            ..ImpairConfig::default()
        };
        let n = 20_000;
        let (order, _, stats) = run(cfg, n);
        let rate = stats.lost as f64 / f64::from(n);
        // Binomial sd is sqrt(0.1*0.9/20000) = 0.0021: 5 sd either side.
        assert!((rate - 0.1).abs() < 0.011, "loss rate {rate}");
        assert_eq!(order.len() as u64, u64::from(n) - stats.lost);
        // Without jitter or reordering, survivors keep their order.
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn jitter_reorders_and_bounds_delay() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            seed: 3,
            ..ImpairConfig::default()
        };
        let (order, delays, _) = run(cfg, 2000);
        let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 100, "only {inversions} inversions");
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_millis(30)));
        let mean = delays.iter().map(|d| d.as_secs_f64()).sum::<f64>() / delays.len() as f64;
        assert!((mean - 0.020).abs() < 0.001, "mean delay {mean}");
    }

    #[test]
    fn no_jitter_no_reordering_without_reorder() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(20),
            ..ImpairConfig::default()
        };
        let (order, _, _) = run(cfg, 500);
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reorder_sends_some_at_once() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(10),
            reorder: 0.25,
            seed: 11,
            ..ImpairConfig::default()
        };
        let n = 8000;
        let (order, delays, stats) = run(cfg, n);
        let rate = stats.reordered as f64 / f64::from(n);
        assert!((rate - 0.25).abs() < 0.025, "reorder rate {rate}");
        let immediate = delays.iter().filter(|d| d.is_zero()).count() as u64;
        assert_eq!(immediate, stats.reordered);
        assert!(order.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn duplication_rate_and_copies() {
        let cfg = ImpairConfig {
            duplicate: 0.05,
            seed: 5,
            ..ImpairConfig::default()
        };
        let n = 20_000;
        let (order, _, stats) = run(cfg, n);
        let rate = stats.duplicated as f64 / f64::from(n);
        assert!((rate - 0.05).abs() < 0.008, "duplicate rate {rate}");
        assert_eq!(order.len() as u64, u64::from(n) + stats.duplicated);
    }

    #[test]
    fn same_seed_same_outcome() {
        let cfg = ImpairConfig {
            delay: Duration::from_millis(3),
            jitter: Duration::from_millis(2),
            loss: 0.05,
            reorder: 0.05,
            duplicate: 0.05,
            seed: 42,
            ..ImpairConfig::default()
        };
        assert_eq!(run(cfg.clone(), 3000).0, run(cfg, 3000).0);
    }

    #[test]
    fn queue_bound_drops_and_counts() {
        let cfg = ImpairConfig {
            delay: Duration::from_secs(10),
            max_queue: 100,
            ..ImpairConfig::default()
        };
        let mut imp = Impairer::new(cfg);
        let now = Instant::now();
        for i in 0..150u32 {
            imp.handle_datagram(now, i.to_le_bytes().to_vec());
        }
        assert_eq!(imp.queued(), 100);
        assert_eq!(imp.stats().queue_full, 50);
    }
}
