package bench_test

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bench"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// TestMain serves as the child process of the two-process systems, which
// start this binary again.
func TestMain(m *testing.M) {
	if bench.IsChild() {
		os.Exit(bench.ServeChild())
	}
	os.Exit(m.Run())
}

// BenchmarkRR is the ping-pong of cmd/sdxbench as a go test benchmark: one
// transaction per iteration, over every system that runs, at each size
// that fits it. ns/op is the mean round trip; p50-us and p99-us come from
// an HDR histogram of every iteration.
func BenchmarkRR(b *testing.B) {
	testutil.Privileged(b)
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs: the client and the server spin on one each")
	}
	// A testbed of one queue each end, and one of two for the systems
	// that need them (sdx-conn-2poll).
	var hs [2]*bench.Hosts
	for i, opt := range []testbed.Options{{Subnet: 61}, {Subnet: 63, Queues: 2}} {
		bed := testbed.New(b, opt)
		if err := bed.Neighbours(); err != nil {
			b.Fatal(err)
		}
		hs[i] = &bench.Hosts{A: bed.A, B: bed.B, ClientCPU: 0, ServerCPU: 1}
	}
	mtu, err := hs[0].MTU()
	if err != nil {
		b.Fatal(err)
	}
	for _, sys := range bench.Systems() {
		h := hs[0]
		if m, ok := sys.(bench.MultiQueue); ok && m.Queues() > 1 {
			h = hs[1]
		}
		b.Run(sys.Name(), func(b *testing.B) {
			if err := sys.Open(h); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if err := sys.Close(); err != nil {
					b.Error(err)
				}
			})
			for _, size := range []int{64, 1024, 16384} {
				if ok, _ := bench.AppliesOn(sys, bench.Spec{Workload: bench.RR, Size: size}, mtu, 2); !ok {
					continue
				}
				b.Run(bench.SizeString(size), func(b *testing.B) { benchRR(b, sys, h, size) })
			}
		})
	}
}

func benchRR(b *testing.B, sys bench.System, h *bench.Hosts, size int) {
	p, err := bench.StartPinger(context.Background(), sys, h, size, 5*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			b.Error(err)
		}
	}()
	if sys.Pinned() {
		restore, err := bench.PinThread(h.ClientCPU)
		if err != nil {
			b.Fatal(err)
		}
		defer restore()
	}
	hist := bench.NewHist()
	b.ReportAllocs()
	b.SetBytes(int64(2 * size))
	for b.Loop() {
		d, err := p.Do()
		if err != nil {
			b.Fatal(err)
		}
		hist.RecordValue(d.Nanoseconds())
	}
	b.ReportMetric(float64(hist.ValueAtQuantile(50))/1e3, "p50-us")
	b.ReportMetric(float64(hist.ValueAtQuantile(99))/1e3, "p99-us")
}
