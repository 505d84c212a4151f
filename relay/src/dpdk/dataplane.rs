//! Bringing the data plane up from a [`Config`]: pools, ports with one queue pair per pipeline
//! core (RSS spreads flows over them), the shared dedup table, the table publisher, the rings to
//! and from the control path, and one pinned lcore per configured core running a
//! [`Pipeline`]. [`DataPlane::stop`] sets the quit flag and joins the cores, which return every
//! mbuf they hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use photon_dpdk::{
    lcore, Eal, Mempool, Port, PortConfig as DpdkPortConfig, Ring, RingConsumer, RingProducer,
    RxQueue, TxQueue,
};

use crate::dpdk::pipeline::{Pipeline, PipelineParts, PortIo, HELD_FRAGMENT_BYTES};
use crate::forward::dedup::Dedup;
use crate::forward::hold::{Forwarding, HoldLimits};
use crate::forward::publish::{self, Publisher};
use crate::forward::table::{LocalSpec, Table, TableError};
use crate::ops::config::Config;
use crate::ops::counters::{CoreCounters, LocalCounters};

/// Slots of each ring carrying repair notes from a data core to the control core (which
/// drains them every loop, at most 50 µs apart).
pub const REPAIR_RING: u32 = 8192;

/// Data room of a header mbuf: DPDK's 128-byte headroom plus the 78-byte header, rounded up.
pub const HEADER_DATA_ROOM: u16 = 128 + 128;

/// Why the data plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DPDK: {0}")]
    Dpdk(#[from] photon_dpdk::Error),
    #[error("port {name:?}: {source}")]
    Port {
        name: String,
        source: photon_dpdk::Error,
    },
    #[error("forwarding table from the config: {0}")]
    Table(#[from] TableError),
    #[error("cannot start the pipeline thread for core {core}: {source}")]
    Spawn { core: usize, source: std::io::Error },
}

/// What the control path (a later layer) gets to drive the data plane.
pub struct ControlLink {
    /// Control messages from each pipeline core, as whole received frames (Ethernet/IPv4/UDP
    /// headers included, so the observed source IP:port and MAC are known). Consume them all
    /// (one SPSC ring per core); frames left inside are freed when both ends are dropped.
    pub from_cores: Vec<RingConsumer>,
    /// Forwarded fragments for the repair cache, one SPSC ring per pipeline core (empty when
    /// `dataplane.repair_mbufs` is 0): mbuf chains of the Photon header and the shared
    /// payload ([`crate::dpdk::pipeline::Pipeline::with_repair_ring`]); give them to
    /// [`crate::control::Control::record_fragment_mbuf`] once the TSC stamp in front is taken
    /// off ([`crate::dpdk::control_core`] does).
    pub repair_notes: Vec<RingConsumer>,
    /// TSC ticks per second (the EAL's measure): converts the notes' stamps.
    pub tsc_hz: u64,
    /// Frames to send, one ring per port (index = port index), drained by pipeline core 0.
    /// Build whole Ethernet frames in mbufs from [`ControlLink::pool`].
    pub to_ports: Vec<RingProducer>,
    /// Publishes new forwarding tables to every core without stopping them.
    pub tables: Publisher<Table>,
    /// A pool for frames the control path builds.
    pub pool: Mempool,
    /// The relay's identity and port MACs, to build new tables with.
    pub local: LocalSpec,
    /// Node ids of the configured peer relays whose next hop is not in the static neighbours
    /// (not in the first table): the control core resolves them by ARP
    /// ([`crate::control::Control::resolve_by_arp`]) and publishes a table with them.
    pub unresolved_peers: Vec<u32>,
}

type Worker = JoinHandle<photon_dpdk::Result<LocalCounters>>;

/// The running pipelines.
pub struct DataPlane {
    quit: Arc<AtomicBool>,
    workers: Vec<(usize, Worker)>,
    counters: Vec<Arc<CoreCounters>>,
    ports: Vec<Port>,
    rx_pool: Mempool,
    header_pool: Mempool,
}

impl DataPlane {
    /// Starts the pipelines described by `cfg` on a running EAL (start it with
    /// `Eal::init(&cfg.eal_args())`).
    pub fn start(eal: &'static Eal, cfg: &Config) -> Result<(DataPlane, ControlLink), StartError> {
        let d = &cfg.dataplane;
        let cores = &cfg.relay.cores;
        let nq = cores.len() as u16;
        // Store-and-forward: each core may hold `hold_max_bytes` worth of RX buffers.
        let store_and_forward = cfg.relay.forwarding == Forwarding::StoreAndForward;
        let hold_mbufs = if store_and_forward {
            let per_core = cfg.relay.hold_max_bytes / HELD_FRAGMENT_BYTES + 1;
            u32::try_from(per_core.saturating_mul(cores.len())).unwrap_or(u32::MAX)
        } else {
            0
        };
        // Cached repair fragments pin an RX buffer and a header mbuf each: the pools get room
        // for the whole cache on top of the data path's own sizes.
        let rx_pool = Mempool::new(
            eal,
            "relay_rx",
            d.rx_mbufs
                .saturating_add(d.repair_mbufs)
                .saturating_add(hold_mbufs),
            d.mbuf_cache,
            Mempool::DEFAULT_DATA_ROOM,
        )?;
        let header_pool = Mempool::new(
            eal,
            "relay_hdr",
            d.header_mbufs.saturating_add(d.repair_mbufs),
            d.mbuf_cache,
            HEADER_DATA_ROOM,
        )?;
        let control_pool = Mempool::new(eal, "relay_ctl", 2047, 32, Mempool::DEFAULT_DATA_ROOM)?;

        let mut ports = Vec::new();
        let mut queues: Vec<(Vec<RxQueue>, Vec<TxQueue>)> = Vec::new();
        let mut macs = Vec::new();
        for p in &cfg.ports {
            let perr = |source| StartError::Port {
                name: p.name.clone(),
                source,
            };
            let id = Port::id_by_name(eal, &p.name).map_err(perr)?;
            let pc = DpdkPortConfig {
                queues: nq,
                rx_desc: d.rx_desc,
                tx_desc: d.tx_desc,
                promiscuous: true,
            };
            let (port, rx, tx) = Port::start(eal, id, &pc, &rx_pool).map_err(perr)?;
            macs.push(port.mac().map_err(perr)?);
            ports.push(port);
            queues.push((rx, tx));
        }
        let local = cfg.local_spec(macs);
        let (specs, unresolved) = cfg.peer_specs();
        let unresolved_peers = unresolved.iter().map(|u| u.spec.node_id).collect();
        let tables = publish::channel(Table::new(local.clone(), specs)?);
        let seed = [rand::random::<u64>(), rand::random::<u64>()];
        let dedup = Arc::new(Dedup::new(d.dedup_entries, seed));

        let mut from_cores = Vec::new();
        let mut repair_notes = Vec::new();
        let mut to_ports = Vec::new();
        let mut port_rings: Vec<Option<RingConsumer>> = Vec::new();
        for i in 0..cfg.ports.len() {
            let (prod, cons) = Ring::create(eal, &format!("relay_tx{i}"), d.control_ring)?;
            to_ports.push(prod);
            port_rings.push(Some(cons));
        }
        let tsc_hz = photon_dpdk::tsc_hz(eal);
        let drain_tsc = (tsc_hz / 1_000_000).max(1) * d.drain_us;
        let idle_sleep_us = d.idle_sleep_us;
        let hold = store_and_forward.then(|| HoldLimits {
            timeout: (tsc_hz / 1000).max(1) * cfg.relay.hold_timeout_ms,
            ..cfg.relay.hold_limits()
        });
        let quit = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        let mut counters = Vec::new();
        // Hand queue q of every port to core index q.
        let mut per_core: Vec<Vec<(RxQueue, TxQueue)>> =
            (0..cores.len()).map(|_| Vec::new()).collect();
        for (rx, tx) in queues {
            for (q, pair) in rx.into_iter().zip(tx).enumerate() {
                per_core[q].push(pair);
            }
        }
        for (ci, (&core, pairs)) in cores.iter().zip(per_core).enumerate() {
            let (prod, cons) = Ring::create(eal, &format!("relay_ctl{ci}"), d.control_ring)?;
            from_cores.push(cons);
            let io = pairs
                .into_iter()
                .enumerate()
                .map(|(pi, (rx, tx))| PortIo {
                    rx,
                    tx,
                    from_control: if ci == 0 { port_rings[pi].take() } else { None },
                })
                .collect();
            let published = Arc::new(CoreCounters::default());
            counters.push(published.clone());
            let parts = PipelineParts {
                ports: io,
                header_pool,
                table: tables.reader(),
                dedup: dedup.clone(),
                to_control: prod,
                counters: published,
                drain_tsc,
            };
            let repair = if d.repair_mbufs > 0 {
                let (prod, cons) = Ring::create(eal, &format!("relay_rep{ci}"), REPAIR_RING)?;
                repair_notes.push(cons);
                Some(prod)
            } else {
                None
            };
            let q = quit.clone();
            let handle = lcore::spawn(eal, core, &format!("relay-core{core}"), move |_| {
                let mut p: Pipeline<RxQueue, TxQueue> = Pipeline::new(parts);
                if let Some(ring) = repair {
                    p = p.with_repair_ring(ring);
                }
                if let Some(limits) = hold {
                    p = p.with_hold(limits);
                }
                if idle_sleep_us > 0 {
                    p = p.with_idle_sleep(std::time::Duration::from_micros(idle_sleep_us));
                }
                p.run(&q);
                p.counters().clone()
            })
            .map_err(|source| StartError::Spawn { core, source })?;
            workers.push((core, handle));
        }
        let link = ControlLink {
            from_cores,
            repair_notes,
            tsc_hz,
            to_ports,
            tables,
            pool: control_pool,
            local,
            unresolved_peers,
        };
        Ok((
            DataPlane {
                quit,
                workers,
                counters,
                ports,
                rx_pool,
                header_pool,
            },
            link,
        ))
    }

    /// Each core's published counters (index = position in `relay.cores`).
    pub fn counters(&self) -> &[Arc<CoreCounters>] {
        &self.counters
    }

    /// The started ports (for link status and driver statistics).
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// The RX and header pools (for in-use gauges).
    pub fn pools(&self) -> (Mempool, Mempool) {
        (self.rx_pool, self.header_pool)
    }

    /// Stops every pipeline (quit flag), waits for them and returns their final counters, by
    /// core. An error names the core whose thread failed to pin/register or panicked.
    pub fn stop(self) -> Result<Vec<LocalCounters>, String> {
        self.quit.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for (core, w) in self.workers {
            match w.join() {
                Ok(Ok(c)) => out.push(c),
                Ok(Err(e)) => return Err(format!("core {core}: {e}")),
                Err(_) => return Err(format!("core {core}: pipeline thread panicked")),
            }
        }
        Ok(out)
    }
}
