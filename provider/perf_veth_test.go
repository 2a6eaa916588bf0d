package provider

// Benchmarks of the data path over the real AF_XDP link, for profiling
// (go test -bench Veth -cpuprofile): the per-frame cost of a stream and of
// a message larger than a frame.

import (
	"strconv"
	"testing"
)

// BenchmarkVethBulk streams 64 KiB writes one way over one connection;
// the receiver reads to the end of the stream.
func BenchmarkVethBulk(b *testing.B) {
	vethBulk(b, Config{})
}

func vethBulk(b *testing.B, cfg Config) {
	p := newVethPair(b, cfg)
	ln := p.listen(b, 4)
	var got int64
	done := serveOne(p.b, ln, func(s Socket) error {
		buf := make([]byte, 64<<10)
		for {
			n, err := p.b.Recv(s, buf)
			if err != nil || n == 0 {
				return err
			}
			got += int64(n)
		}
	})
	s := p.dial(b)
	defer p.a.CloseSocket(s)
	msg := make([]byte, 64<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.a.Send(s, msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.a.Shutdown(s); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if want := int64(b.N) * int64(len(msg)); got != want {
		b.Fatalf("received %d bytes, sent %d", got, want)
	}
	st := p.a.Stats()
	b.ReportMetric(float64(st.DatagramsOut)/float64(b.N), "frames-out/op")
	b.ReportMetric(float64(p.b.Stats().DatagramsOut)/float64(b.N), "frames-back/op")
}

// BenchmarkVethBulkBuffers is BenchmarkVethBulk at several send and
// receive buffer sizes: where a larger window stops paying.
func BenchmarkVethBulkBuffers(b *testing.B) {
	for _, kb := range []int{128, 256, 512, 1024, 2048} {
		b.Run(strconv.Itoa(kb)+"KiB", func(b *testing.B) {
			vethBulk(b, Config{SendBuffer: kb << 10, RecvBuffer: kb << 10})
		})
	}
}

// BenchmarkVethRR is a request-response of 64 B and of 16 KiB (a dozen
// frames each way at MTU 1500) over one connection.
func BenchmarkVethRR(b *testing.B) {
	for _, size := range []int{64, 16 << 10} {
		b.Run(sizeName(size), func(b *testing.B) {
			p := newVethPair(b, Config{})
			ln := p.listen(b, 4)
			done := serveOne(p.b, ln, func(s Socket) error {
				buf := make([]byte, size)
				for {
					for got := 0; got < size; {
						n, err := p.b.Recv(s, buf[got:])
						if err != nil || n == 0 {
							return err
						}
						got += n
					}
					if _, err := p.b.Send(s, buf); err != nil {
						return err
					}
				}
			})
			s := p.dial(b)
			msg := make([]byte, size)
			buf := make([]byte, size)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.a.Send(s, msg); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < size; {
					n, err := p.a.Recv(s, buf[got:])
					if err != nil || n == 0 {
						b.Fatalf("recv: %d, %v", n, err)
					}
					got += n
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "us/roundtrip")
			b.ReportMetric(float64(p.a.Stats().DatagramsOut)/float64(b.N), "frames-out/op")
			p.a.Shutdown(s)
			<-done
			p.a.CloseSocket(s)
		})
	}
}

// serveOne accepts one connection on q's listener ln and runs serve on it,
// on a goroutine of its own; the channel delivers serve's error, or
// Accept's, and the connection is closed after serve.
func serveOne(q *Provider, ln Socket, serve func(s Socket) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		s, _, err := q.Accept(ln)
		if err != nil {
			done <- err
			return
		}
		defer q.CloseSocket(s)
		done <- serve(s)
	}()
	return done
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}
