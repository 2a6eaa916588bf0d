package metrics

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/testbed"
	itu "github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/memnet"
)

func memStack(t *testing.T, n *memnet.Network) *sdx.Stack {
	t.Helper()
	l, err := n.NewLink()
	if err != nil {
		t.Fatal(err)
	}
	st, err := sdx.NewStack(sdx.Config{Link: l, Prefix: memnet.Prefix, NoControl: true,
		Provider: provider.Config{MaxSockets: 64, Buffers: 1024}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// transfer moves n bytes from a to b over sdx and back.
func transfer(t *testing.T, a, b *sdx.Stack, n int) {
	t.Helper()
	ln, err := (&sdx.ListenConfig{Stack: b}).Listen(t.Context(), "tcp", net.JoinHostPort(b.Addr().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := (&sdx.Dialer{Stack: a}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write(make([]byte, n))
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

// The collector's output passes the client library's lint, registers in
// a pedantic registry, and reports the stack's own counter values.
func TestCollectorLintAndValues(t *testing.T) {
	itu.CheckGoroutines(t)
	n := memnet.New(7)
	n.SetFaults(memnet.Faults{Loss: 0.02})
	a, b := memStack(t, n), memStack(t, n)
	transfer(t, a, b, 1<<20)
	c := NewCollector(a, prometheus.Labels{"stack": "a"})
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c, NewCollector(b, prometheus.Labels{"stack": "b"}))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	st := a.Provider().Stats()
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stack" && l.GetValue() == "a" && len(m.GetLabel()) == 1 {
					got[f.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	// The stack is idle now: nothing moves between Stats and Gather.
	for name, want := range map[string]uint64{
		"sdx_datagrams_sent_total":     st.DatagramsOut,
		"sdx_datagrams_received_total": st.DatagramsIn,
		"sdx_retransmits_total":        st.Retransmits,
		"sdx_buffers_capacity":         uint64(st.Buffers),
	} {
		if got[name] != float64(want) {
			t.Errorf("%s = %v, want %d", name, got[name], want)
		}
	}
	if st.Retransmits == 0 {
		t.Errorf("no retransmission at 2%% loss: the test shows nothing")
	}
	if n := testutil.CollectAndCount(c, "sdx_fallbacks_total"); n != len(sdx.FallbackReasons()) {
		t.Errorf("%d fallback series, want one per reason (%d)", n, len(sdx.FallbackReasons()))
	}
}

// On the veth testbed, the queue metrics (XDP_STATISTICS) are there, one
// series per queue, and lint clean.
func TestCollectorXDPQueues(t *testing.T) {
	itu.Privileged(t)
	itu.CheckGoroutines(t)
	bed := testbed.New(t, testbed.Options{Queues: 2})
	st, err := sdx.NewStack(sdx.Config{Netns: bed.A.NS, Interface: bed.A.If, NoControl: true, CloseTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := NewCollector(st, nil)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	for _, name := range []string{"sdx_xdp_rx_dropped_total", "sdx_xdp_rx_ring_full_total", "sdx_xdp_queue_info"} {
		if n := testutil.CollectAndCount(c, name); n != 2 {
			t.Errorf("%s: %d series, want one per queue (2)", name, n)
		}
	}
}
