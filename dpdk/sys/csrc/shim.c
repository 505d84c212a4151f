/* See shim.h for why each wrapper exists. */
#include <stddef.h>

#include "shim.h"

/* The rte_mbuf fields the Rust side reads directly on the fast path (photon_dpdk's
 * `mbuf::field`), without a call: bindgen sees struct rte_mbuf as an opaque blob, so the
 * offsets are stated there and checked here against DPDK's own header. A DPDK whose mbuf
 * layout differs fails this build instead of misreading packets. */
_Static_assert(offsetof(struct rte_mbuf, buf_addr) == 0, "rte_mbuf.buf_addr moved");
_Static_assert(offsetof(struct rte_mbuf, data_off) == 16, "rte_mbuf.data_off moved");
_Static_assert(offsetof(struct rte_mbuf, refcnt) == 18, "rte_mbuf.refcnt moved");
_Static_assert(offsetof(struct rte_mbuf, nb_segs) == 20, "rte_mbuf.nb_segs moved");
_Static_assert(offsetof(struct rte_mbuf, pkt_len) == 36, "rte_mbuf.pkt_len moved");
_Static_assert(offsetof(struct rte_mbuf, data_len) == 40, "rte_mbuf.data_len moved");
_Static_assert(sizeof(((struct rte_mbuf *)0)->data_off) == 2, "rte_mbuf.data_off size");
_Static_assert(sizeof(((struct rte_mbuf *)0)->refcnt) == 2, "rte_mbuf.refcnt size");
_Static_assert(sizeof(((struct rte_mbuf *)0)->nb_segs) == 2, "rte_mbuf.nb_segs size");
_Static_assert(sizeof(((struct rte_mbuf *)0)->pkt_len) == 4, "rte_mbuf.pkt_len size");
_Static_assert(sizeof(((struct rte_mbuf *)0)->data_len) == 2, "rte_mbuf.data_len size");

int photon_errno(void) { return rte_errno; }
unsigned photon_lcore_id(void) { return rte_lcore_id(); }
uint64_t photon_rdtsc(void) { return rte_rdtsc(); }

uint16_t photon_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t photon_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *photon_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int photon_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void photon_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

struct rte_mbuf *photon_pktmbuf_clone(struct rte_mbuf *md, struct rte_mempool *mp)
{
	return rte_pktmbuf_clone(md, mp);
}

char *photon_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *photon_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

/* A fresh mbuf is direct, single-segment and unshared, so the writability checks
 * Mbuf::append makes through separate calls are not needed: one call per header mbuf
 * on the relay's fan-out path instead of five. */
int photon_pktmbuf_alloc_len(struct rte_mempool *mp, uint16_t len, struct rte_mbuf **out,
			     char **data)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
	char *p;

	if (m == NULL)
		return -1;
	p = rte_pktmbuf_append(m, len);
	if (p == NULL) {
		rte_pktmbuf_free(m);
		return -2;
	}
	*out = m;
	*data = p;
	return 0;
}
/* One fan-out's worth of header mbufs in one call: one bulk get from the pool's per-lcore
 * cache instead of n single gets, one refcount update of the payload instead of n, and the
 * chain fields written directly (a fresh mbuf is one direct segment, so rte_pktmbuf_chain's
 * walk to the last segment and its overflow check are not needed). */
int photon_pktmbuf_alloc_chained(struct rte_mempool *mp, uint16_t len, struct rte_mbuf *payload,
				 struct rte_mbuf **out, char **data, unsigned n)
{
	unsigned i;

	if (n == 0)
		return 0;
	if (rte_pktmbuf_alloc_bulk(mp, out, n) != 0)
		return -1;
	if (len > rte_pktmbuf_tailroom(out[0])) {
		rte_pktmbuf_free_bulk(out, n);
		return -2;
	}
	rte_mbuf_refcnt_update(payload, (int16_t)n);
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = out[i];

		m->data_len = len;
		m->pkt_len = (uint32_t)len + payload->data_len;
		m->next = payload;
		m->nb_segs = 2;
		data[i] = rte_pktmbuf_mtod(m, char *);
	}
	return 0;
}
char *photon_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int photon_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
int photon_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail) { return rte_pktmbuf_chain(head, tail); }

struct rte_mbuf *photon_mbuf_next(const struct rte_mbuf *m) { return m->next; }
uint16_t photon_mbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t photon_mbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
int photon_mbuf_is_direct(const struct rte_mbuf *m) { return RTE_MBUF_DIRECT(m) ? 1 : 0; }

uint16_t photon_mbuf_refcnt_update(struct rte_mbuf *m, int16_t delta) { return rte_mbuf_refcnt_update(m, delta); }

unsigned photon_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned photon_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned photon_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

int photon_eth_dev_configure(uint16_t port, uint16_t nb_rx, uint16_t nb_tx, int rss)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	int ret;

	memset(&conf, 0, sizeof(conf));
	ret = rte_eth_dev_info_get(port, &info);
	if (ret != 0)
		return ret;
	if (rss && nb_rx > 1) {
		uint64_t want = RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP;
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_key = NULL;
		conf.rx_adv_conf.rss_conf.rss_hf = want & info.flow_type_rss_offloads;
		if (conf.rx_adv_conf.rss_conf.rss_hf == 0)
			conf.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
	}
	/* Multi-segment TX carries the fan-out chains (header mbuf + shared payload). */
	if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS)
		conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
	return rte_eth_dev_configure(port, nb_rx, nb_tx, &conf);
}

int photon_eth_link(uint16_t port, uint32_t *speed_mbps, int *link_up)
{
	struct rte_eth_link link;
	int ret;

	memset(&link, 0, sizeof(link));
	ret = rte_eth_link_get_nowait(port, &link);
	if (ret != 0)
		return ret;
	*speed_mbps = link.link_speed;
	*link_up = link.link_status == RTE_ETH_LINK_UP;
	return 0;
}

int photon_eth_macaddr(uint16_t port, uint8_t out[6])
{
	struct rte_ether_addr addr;
	int ret = rte_eth_macaddr_get(port, &addr);
	if (ret != 0)
		return ret;
	memcpy(out, addr.addr_bytes, 6);
	return 0;
}

int photon_eth_stats(uint16_t port, uint64_t *ipackets, uint64_t *opackets, uint64_t *imissed,
		     uint64_t *ierrors, uint64_t *oerrors, uint64_t *rx_nombuf)
{
	struct rte_eth_stats st;
	int ret = rte_eth_stats_get(port, &st);
	if (ret != 0)
		return ret;
	*ipackets = st.ipackets;
	*opackets = st.opackets;
	*imissed = st.imissed;
	*ierrors = st.ierrors;
	*oerrors = st.oerrors;
	*rx_nombuf = st.rx_nombuf;
	return 0;
}

int photon_eth_max_queues(uint16_t port, uint16_t *max_rx, uint16_t *max_tx)
{
	struct rte_eth_dev_info info;
	int ret = rte_eth_dev_info_get(port, &info);
	if (ret != 0)
		return ret;
	*max_rx = info.max_rx_queues;
	*max_tx = info.max_tx_queues;
	return 0;
}
