package provider

import (
	"sync"
	"testing"
)

// BenchmarkPingPong measures a 64-byte request-response between two
// providers on a MemNetwork, with blocking Send and Recv on both sides.
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []PollMode{PollAdaptive, PollBusy} {
		b.Run(mode.String(), func(b *testing.B) {
			tn := newTestNet(b, 1, Faults{}, 2, func(c *Config) { c.Mode = mode })
			l := tn.listener(1, 80, 4)
			a, s := tn.conn(l, 80)
			var wg sync.WaitGroup
			wg.Add(1)
			go echo(tn.ps[1], s, &wg)
			p := tn.ps[0]
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Send(a, msg); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < len(msg); {
					n, err := p.Recv(a, buf[got:])
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "us/roundtrip")
			p.CloseSocket(a)
			wg.Wait()
		})
	}
}
