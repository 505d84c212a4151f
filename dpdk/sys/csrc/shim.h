/*
 * Photon's C shim over DPDK 22.11.
 *
 * DPDK implements its fast-path API (RX/TX bursts, mbuf alloc/free/clone, ring
 * enqueue/dequeue, rte_errno, rte_lcore_id, rte_rdtsc) as static-inline functions
 * and macros in its headers. Those have no symbol in the shared libraries, so Rust
 * cannot call them through bindgen alone. Each photon_* function below wraps one
 * of them (the comment says which and why); they are compiled with the exact
 * cflags pkg-config reports for libdpdk, so the inlined code is DPDK's own.
 *
 * A few wrappers also fill structures whose layout is awkward across FFI (the
 * rte_eth_conf unions, rte_eth_link bitfields), so the Rust side never builds
 * them by hand.
 */
#ifndef PHOTON_DPDK_SHIM_H
#define PHOTON_DPDK_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_dev.h>


/* rte_errno is a per-lcore macro (RTE_PER_LCORE(_rte_errno)), not a symbol. */
int photon_errno(void);

/* rte_lcore_id() is static inline; it reads the per-thread lcore id. */
unsigned photon_lcore_id(void);

/* rte_rdtsc() is static inline (the rdtsc instruction); used for TSC timestamps. */
uint64_t photon_rdtsc(void);

/* rte_eth_rx_burst / rte_eth_tx_burst are static inline (they index the fast-path ops table). */
uint16_t photon_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t photon_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

/* rte_pktmbuf_alloc / _alloc_bulk / _free / _clone are static inline. */
struct rte_mbuf *photon_pktmbuf_alloc(struct rte_mempool *mp);
int photon_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void photon_pktmbuf_free(struct rte_mbuf *m);
struct rte_mbuf *photon_pktmbuf_clone(struct rte_mbuf *md, struct rte_mempool *mp);

/* Data-pointer arithmetic (static inline / macros): prepend, append, adj, trim, chain. */
char *photon_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *photon_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/* rte_pktmbuf_alloc + rte_pktmbuf_append in one call: 0 with *out and *data set,
 * -1 if the pool is empty, -2 if len exceeds a fresh buffer's tailroom (nothing allocated). */
int photon_pktmbuf_alloc_len(struct rte_mempool *mp, uint16_t len, struct rte_mbuf **out,
			     char **data);
/* n (>= 0) fresh mbufs from mp in one rte_pktmbuf_alloc_bulk, each with len bytes of data
 * (data[i] points at them) and `payload` (one direct segment) chained behind it; the
 * payload's refcount is raised by n. 0 on success, -1 if the pool cannot give n (nothing
 * allocated), -2 if len exceeds a fresh buffer's tailroom (nothing kept). */
int photon_pktmbuf_alloc_chained(struct rte_mempool *mp, uint16_t len, struct rte_mbuf *payload,
				 struct rte_mbuf **out, char **data, unsigned n);
char *photon_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int photon_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
int photon_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);

/* Field reads through the rte_mbuf unions (the per-packet ones, data pointer and lengths,
 * segment count, refcount, are read in Rust at offsets shim.c checks: photon_dpdk's
 * mbuf::field). */
struct rte_mbuf *photon_mbuf_next(const struct rte_mbuf *m);
uint16_t photon_mbuf_headroom(const struct rte_mbuf *m);
uint16_t photon_mbuf_tailroom(const struct rte_mbuf *m);
int photon_mbuf_is_direct(const struct rte_mbuf *m);

/* rte_mbuf_refcnt_update is static inline (an atomic op). */
uint16_t photon_mbuf_refcnt_update(struct rte_mbuf *m, int16_t delta);

/* rte_ring_{enqueue,dequeue}_burst and rte_ring_count are static inline. */
unsigned photon_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned photon_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned photon_ring_count(const struct rte_ring *r);

/*
 * Configure a port with nb_rx/nb_tx queues. Fills rte_eth_conf (nested unions)
 * in C: RSS over IP/UDP when rss != 0 and the device supports it, restricted to
 * the hash functions the device offers. Returns 0 or a negative errno.
 */
int photon_eth_dev_configure(uint16_t port, uint16_t nb_rx, uint16_t nb_tx, int rss);

/* rte_eth_link packs speed/duplex/autoneg/status into bitfields. */
int photon_eth_link(uint16_t port, uint32_t *speed_mbps, int *link_up);

/* Copies the port's MAC address (struct rte_ether_addr is packed/aligned). */
int photon_eth_macaddr(uint16_t port, uint8_t out[6]);

/* Reads the counters of rte_eth_stats we expose. */
int photon_eth_stats(uint16_t port, uint64_t *ipackets, uint64_t *opackets, uint64_t *imissed,
                     uint64_t *ierrors, uint64_t *oerrors, uint64_t *rx_nombuf);

/* Number of RX/TX queues the device can have (from rte_eth_dev_info). */
int photon_eth_max_queues(uint16_t port, uint16_t *max_rx, uint16_t *max_tx);

#endif
