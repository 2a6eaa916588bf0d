package provider

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/sdx-project/sdx/provider/memnet"
)

// BenchmarkPingPong measures a 64-byte request-response between two
// providers on a memnet.Network, with blocking Send and Recv on both sides.
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []PollMode{PollAdaptive, PollBusy} {
		b.Run(mode.String(), func(b *testing.B) {
			p, a, wait := echoNet(b, 1, mode)
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				roundTrip(b, p, a, msg, buf)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "us/roundtrip")
			p.CloseSocket(a)
			wait()
		})
	}
}

// BenchmarkCloseSocket measures CloseSocket on a connected socket with 0,
// 100 and 10 000 posted receives pending: the reset, the freeing, and one
// ErrAborted completion per operation.
func BenchmarkCloseSocket(b *testing.B) {
	for _, pending := range []int{0, 100, 10000} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			tn := newTestNet(b, 2, memnet.Faults{}, 2, func(c *Config) { c.MaxOps = 16384 })
			p0, p1 := tn.ps[0], tn.ps[1]
			l := tn.listener(1, 80, 64)
			cq := newCQ(b, p0, 16384)
			comps := make([]Completion, 16384)
			buf := make([]byte, 16)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				a, s := tn.conn(l, 80)
				for i := range pending {
					if err := p0.PostRecv(a, buf, cq, uint64(i)); err != nil {
						b.Fatal(err)
					}
				}
				for p0.subq.Len() > 0 { // let the poller take them all
					runtime.Gosched()
				}
				b.StartTimer()
				if err := p0.CloseSocket(a); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				for got := 0; got < pending; {
					n, _ := cq.Wait(comps, time.Second)
					for _, c := range comps[:n] {
						if !errors.Is(c.Err, ErrAborted) {
							b.Fatalf("completion %+v", c)
						}
					}
					got += n
				}
				p1.CloseSocket(s)
				b.StartTimer()
			}
			if pending > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(pending), "ns/op-aborted")
			}
		})
	}
}

// BenchmarkResetObserved measures the time from CloseSocket until the
// peer's pending receive completes with ECONNRESET.
func BenchmarkResetObserved(b *testing.B) {
	tn := newTestNet(b, 3, memnet.Faults{}, 2, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	l := tn.listener(1, 80, 64)
	cq := newCQ(b, p1, 16)
	comps := make([]Completion, 1)
	buf := make([]byte, 16)
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		a, s := tn.conn(l, 80)
		p1.PostRecv(s, buf, cq, 0)
		for p1.subq.Len() > 0 {
			runtime.Gosched()
		}
		b.StartTimer()
		start := time.Now()
		p0.CloseSocket(a)
		if n, _ := cq.Wait(comps, time.Second); n != 1 || !errors.Is(comps[0].Err, ErrConnReset) {
			b.Fatalf("peer's receive: %+v", comps[0])
		}
		total += time.Since(start)
		b.StopTimer()
		p1.CloseSocket(s)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/1000, "us/reset-seen")
}

// BenchmarkEngineBulk streams 64 KiB writes from one engine to another on
// a memnet.Network without delay, both engines stepped by this goroutine:
// the protocol's own CPU per frame (both ends, plus memnet's copy of each
// datagram), with no kernel, no system call and no hand-off between
// goroutines. It is the inner figure of the stream path: what sdx adds to
// each frame above what the link costs. The reader reads after each step,
// so its data has waited: in the datagrams the link received (held=true,
// see Holder), or copied into the pool's buffers (held=false).
func BenchmarkEngineBulk(b *testing.B) {
	for _, c := range []struct {
		mtu  int
		held bool
	}{{1500 - 28, true}, {1500 - 28, false}, {9000 - 28, true}, {9000 - 28, false}} {
		b.Run(fmt.Sprintf("datagram=%d/held=%v", c.mtu, c.held), func(b *testing.B) {
			v := buildVNet(b, 1, memnet.Faults{}, testEngineConfig(), []int{c.mtu, c.mtu}, func(_ int, l *memnet.Link) Link {
				if !c.held {
					l.SetHoldCap(0)
				}
				return l
			})
			a, c := v.pair()
			e0, e1 := v.hosts[0], v.hosts[1]
			chunk := make([]byte, 64<<10)
			buf := make([]byte, 64<<10)
			frames0 := e0.st.datagramsOut.Load() + e1.st.datagramsOut.Load()
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			for b.Loop() {
				sent, got := 0, 0
				for got < len(chunk) {
					if sent < len(chunk) {
						n, err := e0.write(a, chunk[sent:])
						if err != nil {
							b.Fatal(err)
						}
						sent += n
					}
					if !v.step() {
						v.advance()
					}
					n, err := e1.read(c, buf)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
			frames := e0.st.datagramsOut.Load() + e1.st.datagramsOut.Load() - frames0
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(frames), "ns/frame")
			b.ReportMetric(float64(frames)/float64(b.N), "frames/op")
		})
	}
}
