// Package metrics exposes an sdx stack's counters to Prometheus: a
// collector that reads the stack's provider counters, its AF_XDP queues'
// counters (XDP_STATISTICS included) and its fallbacks to kernel TCP each
// time it is scraped. It is optional: importing it is the only way sdx
// depends on the Prometheus client library.
//
// Names follow the Prometheus conventions: an sdx_ prefix, base units
// (bytes, not KiB), _total on counters, and no per-connection label (a
// label's values are bounded: queue ids, drop and fallback reasons,
// buffer places). Per-connection figures are `sdx stat conns -i`'s.
//
//	reg.MustRegister(metrics.NewCollector(st, nil))
package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// Collector is a prometheus.Collector over one stack. Collect may run on
// any goroutine; it reads the counters atomically and allocates a little.
type Collector struct {
	st    *sdx.Stack
	descs []*prometheus.Desc
	d     descs
}

type descs struct {
	counters  []counter
	drops     *prometheus.Desc
	fallbacks *prometheus.Desc
	buffers   *prometheus.Desc
	capacity  *prometheus.Desc
	gauges    []gauge
	queue     []queueCounter
	queueInfo *prometheus.Desc
	mtu       *prometheus.Desc
}

type counter struct {
	d *prometheus.Desc
	v func(*provider.Stats) uint64
}

type gauge struct {
	d *prometheus.Desc
	v func(*provider.Stats) int
}

type queueCounter struct {
	d *prometheus.Desc
	v func(*xdplink.QueueStats) uint64
}

// NewCollector returns a collector over st. labels, if not nil, are
// added to every metric (for instance {"stack": "eth1"} when a process
// registers several stacks in one registry).
func NewCollector(st *sdx.Stack, labels prometheus.Labels) *Collector {
	c := &Collector{st: st}
	desc := func(name, help string, varLabels ...string) *prometheus.Desc {
		d := prometheus.NewDesc("sdx_"+name, help, varLabels, labels)
		c.descs = append(c.descs, d)
		return d
	}
	ctr := func(name, help string, v func(*provider.Stats) uint64) {
		c.d.counters = append(c.d.counters, counter{desc(name, help), v})
	}
	ctr("datagrams_received_total", "Datagrams taken from the link.", func(s *provider.Stats) uint64 { return s.DatagramsIn })
	ctr("datagrams_sent_total", "Datagrams handed to the link.", func(s *provider.Stats) uint64 { return s.DatagramsOut })
	ctr("data_segments_sent_total", "Data segments transmitted, retransmissions included.", func(s *provider.Stats) uint64 { return s.DataOut })
	ctr("segments_sent_in_place_total", "Data segments sent from the buffer they were written to, without a copy.", func(s *provider.Stats) uint64 { return s.SentInPlace })
	ctr("retransmits_total", "Data segments retransmitted.", func(s *provider.Stats) uint64 { return s.Retransmits })
	ctr("fast_retransmits_total", "Data segments marked lost by duplicate acks or SACK.", func(s *provider.Stats) uint64 { return s.FastRetransmits })
	ctr("rto_expiries_total", "Retransmission timer expiries.", func(s *provider.Stats) uint64 { return s.RTOExpiries })
	ctr("acks_sent_total", "Pure acknowledgements sent.", func(s *provider.Stats) uint64 { return s.AcksOut })
	ctr("probes_sent_total", "Window and keepalive probes sent.", func(s *provider.Stats) uint64 { return s.ProbesOut })
	ctr("resets_sent_total", "Resets sent.", func(s *provider.Stats) uint64 { return s.ResetsOut })
	ctr("resets_received_total", "Resets taken.", func(s *provider.Stats) uint64 { return s.ResetsIn })
	ctr("resets_challenged_total", "Resets inside the window but not at its edge, answered with an ack.", func(s *provider.Stats) uint64 { return s.ResetsChallenged })
	ctr("connect_rejects_sent_total", "Connect requests refused.", func(s *provider.Stats) uint64 { return s.RejectsOut })
	ctr("connect_retries_sent_total", "Retries (cookies) sent to connect requests a listener kept no state for.", func(s *provider.Stats) uint64 { return s.RetriesOut })
	ctr("connect_cookies_received_total", "Connect requests that came back with a valid cookie.", func(s *provider.Stats) uint64 { return s.CookiesIn })
	ctr("half_open_expired_total", "Half-open connections dropped because the connector never answered.", func(s *provider.Stats) uint64 { return s.HalfOpenExpired })
	ctr("dead_peers_total", "Connections failed by the dead-peer bound.", func(s *provider.Stats) uint64 { return s.DeadPeers })
	ctr("frame_size_failures_total", "Connections failed because their full-size frames never arrived.", func(s *provider.Stats) uint64 { return s.TooBig })
	ctr("port_unreachables_total", "ICMP port unreachables that failed a live connection.", func(s *provider.Stats) uint64 { return s.Unreachables })
	ctr("reneges_total", "Times out-of-order data was dropped for want of buffers.", func(s *provider.Stats) uint64 { return s.Reneged })
	ctr("out_of_order_segments_total", "Data segments that arrived beyond a hole.", func(s *provider.Stats) uint64 { return s.OutOfOrder })
	ctr("received_direct_bytes_total", "In-order bytes copied from the link straight into a waiting receive.", func(s *provider.Stats) uint64 { return s.RecvDirect })
	ctr("received_held_bytes_total", "In-order bytes that waited for their reader where the link received them.", func(s *provider.Stats) uint64 { return s.RecvHeld })
	ctr("send_errors_total", "Link send errors other than a full ring.", func(s *provider.Stats) uint64 { return s.SendErrors })
	ctr("poller_polls_total", "Steps of the poll loop.", func(s *provider.Stats) uint64 { return s.Poller.Polls })
	ctr("poller_idle_polls_total", "Steps of the poll loop that found nothing to do.", func(s *provider.Stats) uint64 { return s.Poller.IdlePolls })
	ctr("poller_sleeps_total", "Waits of the poller in the link.", func(s *provider.Stats) uint64 { return s.Poller.Sleeps })
	ctr("poller_handoffs_total", "Poller role handed from its holder to a waiting goroutine.", func(s *provider.Stats) uint64 { return s.Poller.Handoffs })
	ctr("poller_wakes_total", "Times the dedicated poller goroutine was woken.", func(s *provider.Stats) uint64 { return s.Poller.PollerWakes })
	ctr("poller_kicks_total", "Times a poller sleeping in the link was woken for work.", func(s *provider.Stats) uint64 { return s.Poller.Kicks })
	c.d.drops = desc("received_drops_total", "Received datagrams dropped, by reason.", "reason")
	c.d.fallbacks = desc("fallbacks_total", "Connections that went over kernel TCP, by reason (docs/SWITCH.md).", "reason")
	c.d.buffers = desc("buffers", "Buffers of the shared pool, by where they are.", "place")
	c.d.capacity = desc("buffers_capacity", "Buffers in the shared pool.")
	g := func(name, help string, v func(*provider.Stats) int) {
		c.d.gauges = append(c.d.gauges, gauge{desc(name, help), v})
	}
	g("sockets", "Live descriptors.", func(s *provider.Stats) int { return s.Sockets })
	g("endpoints", "Sockets plus connections not yet accepted.", func(s *provider.Stats) int { return s.Endpoints })
	g("half_open_connections", "Accepted-side connections whose connector has not answered yet.", func(s *provider.Stats) int { return s.HalfOpen })
	g("held_buffers", "Link buffers keeping received data for its reader.", func(s *provider.Stats) int { return s.HeldBuffers })
	g("operations_in_use", "Operations posted or running.", func(s *provider.Stats) int { return s.OpsInUse })
	g("operations_capacity", "The operation pool's size.", func(s *provider.Stats) int { return s.Ops })
	q := func(name, help string, v func(*xdplink.QueueStats) uint64) {
		c.d.queue = append(c.d.queue, queueCounter{desc(name, help, "queue"), v})
	}
	q("xdp_rx_frames_total", "Frames taken from the queue's AF_XDP rx ring.", func(s *xdplink.QueueStats) uint64 { return s.RxFrames })
	q("xdp_tx_frames_total", "Frames built for the queue's AF_XDP tx ring.", func(s *xdplink.QueueStats) uint64 { return s.TxFrames })
	q("xdp_rx_dropped_total", "XDP_STATISTICS rx_dropped: frames the kernel dropped before the rx ring.", func(s *xdplink.QueueStats) uint64 { return s.Kernel.RxDropped })
	q("xdp_rx_invalid_descs_total", "XDP_STATISTICS rx_invalid_descs.", func(s *xdplink.QueueStats) uint64 { return s.Kernel.RxInvalid })
	q("xdp_tx_invalid_descs_total", "XDP_STATISTICS tx_invalid_descs.", func(s *xdplink.QueueStats) uint64 { return s.Kernel.TxInvalid })
	q("xdp_rx_ring_full_total", "XDP_STATISTICS rx_ring_full: frames dropped for a full rx ring.", func(s *xdplink.QueueStats) uint64 { return s.Kernel.RxRingFull })
	q("xdp_fill_ring_empty_total", "XDP_STATISTICS rx_fill_ring_empty_descs: times the kernel found the fill ring empty.", func(s *xdplink.QueueStats) uint64 { return s.Kernel.FillRingEmpty })
	q("xdp_tx_ring_empty_total", "XDP_STATISTICS tx_ring_empty_descs: times the kernel found the tx ring empty.", func(s *xdplink.QueueStats) uint64 { return s.Kernel.TxRingEmptyDescs })
	c.d.queueInfo = desc("xdp_queue_info", "An AF_XDP queue the stack serves, and its mode (copy or zero-copy); always 1.", "queue", "mode")
	c.d.mtu = desc("link_mtu_bytes", "The largest datagram the stack's link carries.")
	return c
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect reads the stack's counters and sends them.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.st.Stats()
	for _, x := range c.d.counters {
		ch <- prometheus.MustNewConstMetric(x.d, prometheus.CounterValue, float64(x.v(&s)))
	}
	for _, d := range []struct {
		reason string
		n      uint64
	}{
		{"malformed", s.Drops.Malformed}, {"checksum", s.Drops.Checksum}, {"bad_token", s.Drops.BadToken},
		{"unknown_connection", s.Drops.UnknownConn}, {"out_of_window", s.Drops.OutOfWindow},
		{"duplicate", s.Drops.Duplicate}, {"no_buffer", s.Drops.NoBuffer}, {"bad_ack", s.Drops.BadAck},
		{"bad_cookie", s.Drops.BadCookie}, {"unreachable", s.Drops.Unreach},
	} {
		ch <- prometheus.MustNewConstMetric(c.d.drops, prometheus.CounterValue, float64(d.n), d.reason)
	}
	for f, n := range c.st.Fallbacks() {
		ch <- prometheus.MustNewConstMetric(c.d.fallbacks, prometheus.CounterValue, float64(n), f.String())
	}
	for _, b := range []struct {
		place string
		n     int
	}{
		{"free", s.BuffersFree}, {"send_queued", s.BuffersSendQueued}, {"in_flight", s.BuffersInFlight},
		{"out_of_order", s.BuffersOutOfOrder}, {"receive_queued", s.BuffersRecvQueued}, {"sending", s.BuffersSending},
	} {
		ch <- prometheus.MustNewConstMetric(c.d.buffers, prometheus.GaugeValue, float64(b.n), b.place)
	}
	ch <- prometheus.MustNewConstMetric(c.d.capacity, prometheus.GaugeValue, float64(s.Buffers))
	for _, g := range c.d.gauges {
		ch <- prometheus.MustNewConstMetric(g.d, prometheus.GaugeValue, float64(g.v(&s)))
	}
	ls := c.st.LinkStats()
	for i := range ls.Queues {
		qs := &ls.Queues[i]
		id := strconv.Itoa(qs.ID)
		for _, x := range c.d.queue {
			ch <- prometheus.MustNewConstMetric(x.d, prometheus.CounterValue, float64(x.v(qs)), id)
		}
		ch <- prometheus.MustNewConstMetric(c.d.queueInfo, prometheus.GaugeValue, 1, id, qs.Mode.String())
	}
	ch <- prometheus.MustNewConstMetric(c.d.mtu, prometheus.GaugeValue, float64(s.MTU))
}
