package bench_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bench"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// openSystem opens the named system on a fresh testbed and closes it when
// the test ends, then checks that no goroutine or descriptor is left.
func openSystem(t *testing.T, name string, subnet uint8) (bench.System, *bench.Hosts) {
	t.Helper()
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	testutil.Privileged(t)
	if runtime.NumCPU() < 2 {
		testutil.SkipOrFail(t, "needs two CPUs")
	}
	sys, ok := bench.Lookup(name)
	if !ok {
		t.Fatalf("no system %q", name)
	}
	queues := 1
	if m, ok := sys.(bench.MultiQueue); ok {
		queues = m.Queues()
	}
	bed := testbed.New(t, testbed.Options{Subnet: subnet, Queues: queues})
	if err := bed.Neighbours(); err != nil {
		t.Fatal(err)
	}
	h := &bench.Hosts{A: bed.A, B: bed.B, ClientCPU: 0, ServerCPU: 1}
	if err := sys.Open(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Error(err)
		}
	})
	return sys, h
}

var shortBudget = bench.Budget{Messages: 50000, Bytes: 64 << 20, Conns: 200, Limit: 100 * time.Millisecond, Setup: 3 * time.Second,
	Warmup: 100, Transactions: 20000}

// TestFloorParked runs the floors that wait in the netpoller, in one
// process and in two: nothing pinned, round trips at 64 B and 16 KiB
// (frames of the MTU's payload), a one-way message rate and bulk counted
// by the receiver, and an idle end that costs next to no CPU, where a
// spinning end takes a whole core.
func TestFloorParked(t *testing.T) {
	for i, name := range []string{"xsk-floor-park", "xsk-floor-2p"} {
		t.Run(name, func(t *testing.T) {
			sys, h := openSystem(t, name, uint8(66+i))
			if sys.Pinned() {
				t.Errorf("%s is pinned", name)
			}
			run := func(spec bench.Spec) *bench.Sample {
				t.Helper()
				s, err := bench.Run(context.Background(), sys, h, spec, shortBudget)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			for _, size := range []int{64, 16384} {
				rr := run(bench.Spec{Workload: bench.RR, Size: size, Conns: 1})
				if rr.Count == 0 || rr.Lost > rr.Count/100 || rr.Hist.ValueAtQuantile(50) <= 0 || rr.CPU <= 0 {
					t.Errorf("%d B rr: %d transactions, %d lost, CPU %v", size, rr.Count, rr.Lost, rr.CPU)
				}
				t.Logf("%d B rr: p50 %.1f µs, %d transactions, %d lost", size, float64(rr.Hist.ValueAtQuantile(50))/1e3, rr.Count, rr.Lost)
			}
			msg := run(bench.Spec{Workload: bench.MsgRate, Size: 64, Conns: 1})
			checkOneWay(t, msg, 1)
			size := bench.FrameMessage(1500)
			bulk := run(bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 1})
			checkOneWay(t, bulk, int64(size))
			t.Logf("msgrate 64 B: %.0f msg/s, loss %.3f; bulk %.2f Gbit/s, loss %.3f", msg.Rate(), msg.Loss(), bulk.Rate(), bulk.Loss())
			idle := run(bench.Spec{Workload: bench.Idle, Conns: 1})
			// The child's CPU comes from /proc in 10 ms ticks: one tick
			// over the 100 ms is 10%; a spinning end would be 100%.
			if pct := idle.Rate(); pct > 25 {
				t.Errorf("idle: %.1f%% of a core; parked ends should cost next to nothing", pct)
			}
		})
	}
}

// TestTwoProcOneWay runs the stream systems' one-way workloads and the
// connection rate against the child's sink and closer: every message and
// every whole 64 KiB chunk sent arrives and is counted there. The stacks
// of sdx-conn-2poll-2p have two pollers each, on a veth of two queues.
func TestTwoProcOneWay(t *testing.T) {
	for i, name := range []string{"tcp-gonet-2p", "sdx-conn-2p", "sdx-conn-2poll-2p"} {
		t.Run(name, func(t *testing.T) {
			sys, h := openSystem(t, name, uint8(68+i))
			for _, spec := range []bench.Spec{
				{Workload: bench.MsgRate, Size: 64, Conns: 1},
				{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 1},
				{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 4},
				{Workload: bench.ConnRate, Conns: 1},
			} {
				queues, err := h.Queues()
				if err != nil {
					t.Fatal(err)
				}
				if ok, why := bench.AppliesOn(sys, spec, 1500, queues); !ok {
					t.Errorf("%s: does not apply: %s", spec, why)
					continue
				}
				s, err := bench.Run(context.Background(), sys, h, spec, shortBudget)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: %.4g %s, %.1f µs CPU per message", spec, s.Rate(), s.Unit(), s.CPUPerMsg())
				if s.Count <= 0 || s.Elapsed <= 0 || s.CPU <= 0 {
					t.Errorf("%s: count %d in %v, CPU %v", spec, s.Count, s.Elapsed, s.CPU)
				}
				switch spec.Workload {
				case bench.MsgRate:
					if s.Count != s.Sent {
						t.Errorf("msgrate: the sink counted %d messages of the %d sent", s.Count, s.Sent)
					}
				case bench.Bulk:
					if s.Count%bench.BulkChunk != 0 || s.Count > shortBudget.Bytes {
						t.Errorf("%s: the sink counted %d bytes: not whole chunks within the budget of %d", spec, s.Count, shortBudget.Bytes)
					}
				}
			}
		})
	}
}
