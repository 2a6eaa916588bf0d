package bench_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bench"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// TestFrameMessage: the floor's message is the MTU's payload, also where
// the frame spans several UMEM frames.
func TestFrameMessage(t *testing.T) {
	for _, c := range []struct{ mtu, want int }{
		{576, 548}, {1500, 1472}, {1778, 1750}, {3826, 3798}, {9000, 8972}, {65000, 64972}, {65535, 65507},
	} {
		if got := bench.FrameMessage(c.mtu); got != c.want {
			t.Errorf("FrameMessage(%d) = %d, want %d", c.mtu, got, c.want)
		}
	}
}

// TestFloorBulk runs the floor's bulk and its message rate at the largest
// frame briefly over the veth testbed at MTU 1500 and 9000, and checks the
// figures: something measured, payload counted in whole frames of
// FrameMessage bytes, no more received than sent.
func TestFloorBulk(t *testing.T) {
	testutil.Privileged(t)
	if runtime.NumCPU() < 2 {
		testutil.SkipOrFail(t, "needs two CPUs: the client and the server spin on one each")
	}
	for _, mtu := range []int{1500, 9000} {
		t.Run(frameName(mtu), func(t *testing.T) {
			testutil.CheckGoroutines(t)
			testutil.CheckFDs(t)
			bed := testbed.New(t, testbed.Options{Subnet: 64, MTU: mtu})
			if err := bed.Neighbours(); err != nil {
				t.Fatal(err)
			}
			h := &bench.Hosts{A: bed.A, B: bed.B, ClientCPU: 0, ServerCPU: 1}
			if got, err := h.MTU(); err != nil || got != mtu {
				t.Fatalf("Hosts.MTU: %d, %v; want %d", got, err, mtu)
			}
			sys, _ := bench.Lookup("xsk-floor")
			if err := sys.Open(h); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := sys.Close(); err != nil {
					t.Error(err)
				}
			}()
			size := bench.FrameMessage(mtu)
			if m := sys.MaxMessage(mtu); m != size {
				t.Fatalf("MaxMessage(%d) = %d, want FrameMessage's %d", mtu, m, size)
			}
			if ok, why := bench.Applies(sys, bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 4}, mtu); ok || !strings.Contains(why, "one flow") {
				t.Errorf("bulk over 4 connections applies %v (%q); want one flow only", ok, why)
			}
			if ok, why := bench.Applies(sys, bench.Spec{Workload: bench.MsgRate, Size: 16384, Conns: 1}, mtu); ok || !strings.Contains(why, frameName(mtu)) {
				t.Errorf("16 KiB msgrate applies %v (%q); want a message of one frame at %s", ok, why, frameName(mtu))
			}
			bud := bench.Budget{Messages: 100000, Bytes: 256 << 20, Limit: 100 * time.Millisecond, Setup: 3 * time.Second,
				Warmup: 100, Transactions: 100000}

			// A ping-pong message longer than a frame goes as several.
			rr, err := bench.Run(context.Background(), sys, h, bench.Spec{Workload: bench.RR, Size: 16384, Conns: 1}, bud)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Count == 0 || rr.Lost > rr.Count/100 || rr.Hist.ValueAtQuantile(50) <= 0 {
				t.Errorf("16 KiB rr: %d transactions, %d lost", rr.Count, rr.Lost)
			}
			t.Logf("16 KiB rr in frames of at most %d B: p50 %.1f µs, %d transactions, %d lost", size, float64(rr.Hist.ValueAtQuantile(50))/1e3, rr.Count, rr.Lost)

			bulk, err := bench.Run(context.Background(), sys, h, bench.Spec{Workload: bench.Bulk, Size: bench.BulkChunk, Conns: 1}, bud)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("bulk: %.2f %s, %d of %d payload bytes in %v, %.1f µs CPU per 64 KiB, loss %.3f",
				bulk.Rate(), bulk.Unit(), bulk.Count, bulk.Sent, bulk.Elapsed, bulk.CPUPerMsg(), bulk.Loss())
			checkOneWay(t, bulk, int64(size))
			if want := float64(bulk.Count) * 8 / 1e9 / bulk.Elapsed.Seconds(); bulk.Unit() != "Gbit/s" || math.Abs(bulk.Rate()-want) > 1e-9*want {
				t.Errorf("bulk rate %v %s from %d bytes in %v", bulk.Rate(), bulk.Unit(), bulk.Count, bulk.Elapsed)
			}
			if bulk.Count > bud.Bytes+int64(size) {
				t.Errorf("bulk received %d bytes, over the budget of %d", bulk.Count, bud.Bytes)
			}

			msg, err := bench.Run(context.Background(), sys, h, bench.Spec{Workload: bench.MsgRate, Size: size, Conns: 1}, bud)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("msgrate %d B: %.0f %s, %d of %d frames, loss %.3f", size, msg.Rate(), msg.Unit(), msg.Count, msg.Sent, msg.Loss())
			checkOneWay(t, msg, 1)
			if msg.Sent > int64(bud.Messages) {
				t.Errorf("msgrate sent %d messages, over the budget of %d", msg.Sent, bud.Messages)
			}
		})
	}
}

// checkOneWay checks a one-way sample whose Count and Sent are in units of
// unit: both positive and whole, no more received than sent, a loss
// between 0 and 1, and time and CPU spent.
func checkOneWay(t *testing.T, s *bench.Sample, unit int64) {
	t.Helper()
	if s.Count <= 0 || s.Sent <= 0 || s.Count > s.Sent || s.Count%unit != 0 || s.Sent%unit != 0 {
		t.Errorf("%s: received %d, sent %d, want 0 < received <= sent, both in units of %d", s.Spec, s.Count, s.Sent, unit)
	}
	if l := s.Loss(); l < 0 || l >= 1 {
		t.Errorf("%s: loss %v", s.Spec, l)
	}
	if s.Elapsed <= 0 || s.Rate() <= 0 || s.CPU <= 0 || s.CPUPerMsg() <= 0 {
		t.Errorf("%s: elapsed %v rate %v CPU %v (%v per message)", s.Spec, s.Elapsed, s.Rate(), s.CPU, s.CPUPerMsg())
	}
	if s.Hist != nil || s.Lost != 0 {
		t.Errorf("%s: round trips on a one-way run", s.Spec)
	}
}

func frameName(mtu int) string { return fmt.Sprintf("MTU %d", mtu) }
