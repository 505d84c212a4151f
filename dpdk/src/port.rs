use std::ffi::CString;
use std::sync::Arc;

use photon_dpdk_sys as sys;

use crate::error::{check, Error, Result};
use crate::{Eal, MbufBatch, Mempool};

/// How to bring up a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// RX queues (and as many TX queues): one per pipeline core. RSS spreads flows when > 1.
    pub queues: u16,
    /// RX descriptors per queue.
    pub rx_desc: u16,
    /// TX descriptors per queue.
    pub tx_desc: u16,
    /// Receive every frame, not only those addressed to the port's MAC.
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            promiscuous: true,
        }
    }
}

/// Link state as `rte_eth_link_get_nowait` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
}

/// The counters of `rte_eth_stats` that Photon reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Frames the NIC dropped because RX queues were full.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failures for lack of mbufs.
    pub rx_nombuf: u64,
}

#[derive(Debug)]
struct PortInner {
    id: u16,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the port was started by Port::start and every queue handle (which holds an
        // Arc to this) is gone, so no thread is in a burst call on it.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
    }
}

/// A started ethdev port. Stopped and closed when the port and all its queue handles are dropped.
#[derive(Debug, Clone)]
pub struct Port {
    inner: Arc<PortInner>,
}

/// One RX queue of a port: owned by exactly one thread at a time (the handle is `Send`, not
/// `Clone`), as DPDK requires for lock-free bursts.
#[derive(Debug)]
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

/// One TX queue of a port, owned by one thread at a time.
#[derive(Debug)]
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

impl Port {
    /// Finds a port by device name (`net_ring0`, `net_af_packet0`, `0000:01:00.0`, ...).
    pub fn id_by_name(_eal: &Eal, name: &str) -> Result<u16> {
        let c = CString::new(name).map_err(|_| Error::NulInArgument(name.into()))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let r = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        if r != 0 {
            return Err(Error::PortNotFound { name: name.into() });
        }
        Ok(id)
    }

    /// Configures and starts port `id` with `cfg.queues` RX and TX queues whose RX buffers come
    /// from `pool`, and returns the port with its queue handles (index = queue id).
    pub fn start(
        eal: &Eal,
        id: u16,
        cfg: &PortConfig,
        pool: &Mempool,
    ) -> Result<(Port, Vec<RxQueue>, Vec<TxQueue>)> {
        // SAFETY: plain validity query.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(Error::PortNotFound {
                name: format!("port {id}"),
            });
        }
        let (mut max_rx, mut max_tx) = (0u16, 0u16);
        // SAFETY: valid port id and out-pointers.
        check("rte_eth_dev_info_get", unsafe {
            sys::photon_eth_max_queues(id, &mut max_rx, &mut max_tx)
        })?;
        if cfg.queues == 0 || cfg.queues > max_rx || cfg.queues > max_tx {
            return Err(Error::Queue {
                port: id,
                queue: cfg.queues,
                why: "more queues than the device supports",
            });
        }
        // SAFETY: valid port id; the shim fills rte_eth_conf.
        check("rte_eth_dev_configure", unsafe {
            sys::photon_eth_dev_configure(id, cfg.queues, cfg.queues, 1)
        })?;
        let socket = eal.socket_id();
        // SAFETY: valid port id.
        let dev_socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if dev_socket >= 0 {
            dev_socket as u32
        } else {
            socket as u32
        };
        for q in 0..cfg.queues {
            // SAFETY: configured port, queue < nb_rx; NULL rxconf means the driver's defaults;
            // the pool outlives the port (pools are never freed).
            check("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    cfg.rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
            // SAFETY: as above for TX.
            check("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(id, q, cfg.tx_desc, socket, std::ptr::null())
            })?;
        }
        // SAFETY: fully configured port.
        check("rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(id) })?;
        if cfg.promiscuous {
            // Some virtual devices do not implement promiscuous mode; they receive everything anyway.
            // SAFETY: started port.
            let _ = unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        let inner = Arc::new(PortInner { id });
        let rx = (0..cfg.queues)
            .map(|queue| RxQueue {
                port: inner.clone(),
                queue,
            })
            .collect();
        let tx = (0..cfg.queues)
            .map(|queue| TxQueue {
                port: inner.clone(),
                queue,
            })
            .collect();
        Ok((Port { inner }, rx, tx))
    }

    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// Link status without waiting.
    pub fn link(&self) -> Result<Link> {
        let (mut speed, mut up) = (0u32, 0i32);
        // SAFETY: valid started port, valid out-pointers.
        check("rte_eth_link_get_nowait", unsafe {
            sys::photon_eth_link(self.inner.id, &mut speed, &mut up)
        })?;
        Ok(Link {
            up: up != 0,
            speed_mbps: speed,
        })
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut mac = [0u8; 6];
        // SAFETY: valid port and a 6-byte out buffer.
        check("rte_eth_macaddr_get", unsafe {
            sys::photon_eth_macaddr(self.inner.id, mac.as_mut_ptr())
        })?;
        Ok(mac)
    }

    /// Hardware/driver counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = PortStats::default();
        // SAFETY: valid port and out-pointers.
        check("rte_eth_stats_get", unsafe {
            sys::photon_eth_stats(
                self.inner.id,
                &mut s.rx_packets,
                &mut s.tx_packets,
                &mut s.rx_missed,
                &mut s.rx_errors,
                &mut s.tx_errors,
                &mut s.rx_nombuf,
            )
        })?;
        Ok(s)
    }
}

impl RxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Receives up to `batch.room()` frames into the batch; returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        let room = batch.room() as u16;
        if room == 0 {
            return 0;
        }
        // SAFETY: this handle is the only user of (port, queue) (not Clone, `&mut self`); the
        // pointer addresses `room` free slots; the driver writes n <= room valid mbufs there.
        unsafe {
            let n = sys::photon_rx_burst(self.port.id, self.queue, batch.free_slots_ptr(), room)
                as usize;
            batch.commit_filled(n);
            n
        }
    }
}

impl TxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Offers the batch to the driver; the mbufs it took leave the batch, the rest stay owned
    /// by it (retry later, or drop them: dropping frees). Returns how many were taken.
    #[inline]
    pub fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        let len = batch.len() as u16;
        if len == 0 {
            return 0;
        }
        // SAFETY: this handle is the only user of (port, queue); the first `len` slots hold
        // valid owned mbufs; the driver takes ownership of the first n it returns.
        let n = unsafe { sys::photon_tx_burst(self.port.id, self.queue, batch.filled_ptr(), len) }
            as usize;
        batch.consume_front(n);
        n
    }
}
