package provider

// A bounded soak on the real path: many connections opening, moving
// seeded data, and closing gracefully or abortively, from either side,
// through the hop with loss injected. At the end the providers' buffers,
// operations and sockets, the links' UMEM frames, the goroutines and the
// heap are back where they started.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/testbed"
)

// How a soak connection ends.
const (
	soakGraceful    = iota // the client ends its stream; the server answers with the digest and ends its own
	soakClientAbort        // the client hard-closes halfway through its stream
	soakServerAbort        // the server hard-closes after its first bytes
	soakEnds
)

// soakCounts are what the soak did.
type soakCounts struct {
	conns, bytes                       atomic.Int64
	ends                               [soakEnds]atomic.Int64
	refused, clientResets, serverReset atomic.Int64
}

// soakServer serves one connection: it reads everything and answers the
// stream's SHA-256 at its end, or hard-closes after its first bytes when
// the client's first byte asks for it.
func soakServer(p *Provider, s Socket, c *soakCounts) error {
	defer p.CloseSocket(s)
	h := sha256.New()
	buf := make([]byte, 32<<10)
	first := true
	for {
		n, err := p.Recv(s, buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				c.serverReset.Add(1)
				return nil // the client's hard close
			}
			return fmt.Errorf("server recv: %w", err)
		}
		if n == 0 {
			if _, err := p.Send(s, h.Sum(nil)); err != nil {
				return fmt.Errorf("server send: %w", err)
			}
			if err := p.Shutdown(s); err != nil {
				return fmt.Errorf("server shutdown: %w", err)
			}
			// Wait for the client's hard close, so the digest is read
			// before ours. A receive after the end of the stream returns
			// at once (0, nil) until the client's reset arrives
			// (ECONNRESET); if that reset is lost, our keepalive probe
			// draws another within Timeout/3.
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
				if _, err := p.Recv(s, buf); err != nil {
					return nil
				}
				time.Sleep(time.Millisecond)
			}
			return errors.New("server: the client never closed")
		}
		if first && buf[0] == soakServerAbort {
			return nil // hard close by the server
		}
		first = false
		h.Write(buf[:n])
	}
}

// soakClient opens one connection to to, sends size seeded bytes whose
// first byte says how the connection ends, and checks the outcome.
func soakClient(p *Provider, to netip.AddrPort, rng *rand.Rand, c *soakCounts) error {
	end := rng.IntN(soakEnds)
	size := 1 + rng.IntN(512<<10)
	s, err := p.Socket()
	if err != nil {
		return err
	}
	defer p.CloseSocket(s)
	for tries := 0; ; tries++ {
		err = p.Connect(s, to)
		if !errors.Is(err, syscall.ECONNREFUSED) || tries == 100 {
			break
		}
		// A full backlog: the server is busy. Try again on a new socket.
		c.refused.Add(1)
		p.CloseSocket(s)
		time.Sleep(time.Millisecond)
		if s, err = p.Socket(); err != nil {
			return err
		}
	}
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	c.conns.Add(1)
	src := seedStream(rng.Uint64())
	h := sha256.New()
	buf := make([]byte, 16<<10)
	sent := 0
	for sent < size {
		m := min(len(buf), size-sent)
		src.Read(buf[:m])
		if sent == 0 {
			buf[0] = byte(end)
		}
		if end == soakClientAbort && sent >= size/2 {
			c.ends[end].Add(1)
			return nil // the deferred CloseSocket is the hard close
		}
		h.Write(buf[:m])
		if _, err := p.Send(s, buf[:m]); err != nil {
			if end == soakServerAbort && errors.Is(err, syscall.ECONNRESET) {
				c.clientResets.Add(1)
				c.ends[end].Add(1)
				return nil
			}
			return fmt.Errorf("send (end %d) after %d bytes: %w", end, sent, err)
		}
		sent += m
		c.bytes.Add(int64(m))
	}
	if end == soakClientAbort {
		c.ends[end].Add(1)
		return nil
	}
	if err := p.Shutdown(s); err != nil {
		if end == soakServerAbort && errors.Is(err, syscall.ECONNRESET) {
			c.clientResets.Add(1)
			c.ends[end].Add(1)
			return nil
		}
		return fmt.Errorf("shutdown: %w", err)
	}
	got := make([]byte, 0, 32)
	for {
		n, err := p.Recv(s, buf)
		if err != nil {
			if end == soakServerAbort && errors.Is(err, syscall.ECONNRESET) {
				c.clientResets.Add(1)
				c.ends[end].Add(1)
				return nil
			}
			return fmt.Errorf("recv digest (end %d): %w", end, err)
		}
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	if end == soakServerAbort {
		return fmt.Errorf("the server was to abort, but answered %d bytes", len(got))
	}
	if string(got) != string(h.Sum(nil)) {
		return fmt.Errorf("digest of %d bytes: the server saw other bytes", size)
	}
	c.ends[end].Add(1)
	return nil
}

// TestSoak soaks for about a minute (three seconds with -short, twenty
// under the race detector).
func TestSoak(t *testing.T) {
	run := time.Minute
	if testing.Short() {
		run = 3 * time.Second
	} else if raceOn {
		run = 20 * time.Second
	}
	soak(t, 70, func(start time.Time, _ int64) bool { return time.Since(start) < run })
}

// BenchmarkSoak is the soak as a benchmark: one operation is one
// connection, so -benchtime sets its length (-benchtime 2m soaks for
// about two minutes, -benchtime 5000x for 5000 connections). It reports
// the connection rate and throughput, and what stayed behind: heap growth
// and goroutines, which must be none beyond the documented bounds (the
// run fails otherwise).
func BenchmarkSoak(b *testing.B) {
	// Enough connections for every way of ending, also in the framework's
	// first run with b.N = 1.
	n := int64(max(b.N, 100))
	r := soak(b, 71, func(_ time.Time, conns int64) bool { return conns < n })
	b.ReportMetric(float64(r.conns)/r.elapsed.Seconds(), "conns/s")
	b.ReportMetric(float64(r.bytes)/r.elapsed.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(r.heapGrowth)/1024, "heap-growth-KiB")
	b.ReportMetric(float64(r.goroutines), "goroutines-left")
}

// soakResult is what a soak did and what it left.
type soakResult struct {
	conns, bytes int64
	elapsed      time.Duration
	heapGrowth   int64 // bytes; may be negative
	goroutines   int   // more than at the start
}

// soak runs eight clients on A against a server on B through the hop at
// 2% loss of sdx frames while more says so, each client opening
// connection after connection, then checks that everything is back where
// it started.
func soak(t testing.TB, subnet uint8, more func(start time.Time, conns int64) bool) soakResult {
	hp := newHopPair(t, testbed.HopOptions{Subnet: subnet}, Config{})
	ln := hp.listen(t, 64)
	hp.configure(t, bpf.FaultConfig{DropRate: 0.02, Seed: uint64(subnet)})
	to := netip.AddrPortFrom(hp.hop.B.Addr, hp.portB)
	const clients = 8

	// One connection first, so the lazily made parts (neighbour entries,
	// pools, runtime structures) exist before the baseline.
	var c soakCounts
	serveErr := make(chan error, 1)
	var servers sync.WaitGroup
	go func() {
		for {
			s, _, err := hp.b.Accept(ln)
			if err != nil {
				serveErr <- err // the listener's close ends the loop
				return
			}
			servers.Add(1)
			go func() {
				defer servers.Done()
				if err := soakServer(hp.b, s, &c); err != nil {
					t.Error(err)
				}
			}()
		}
	}()
	if err := soakClient(hp.a, to, rand.New(rand.NewPCG(1, 2)), &c); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the warm-up connection to close", func() bool { return hp.b.Stats().Sockets == 1 })
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0, goroutines0 := ms.HeapAlloc, runtime.NumGoroutine()
	a0, b0 := hp.a.Stats(), hp.b.Stats()

	if b, ok := t.(*testing.B); ok {
		b.ResetTimer()
	}
	start := time.Now()
	warm, warmBytes := c.conns.Load(), c.bytes.Load()
	soaked := func() int64 { return c.conns.Load() - warm }
	var wg sync.WaitGroup
	var failures atomic.Int64
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 70))
			for more(start, soaked()) {
				if err := soakClient(hp.a, to, rng, &c); err != nil {
					if failures.Add(1) <= 5 {
						t.Errorf("client %d: %v", i, err)
					}
				}
			}
		}()
	}
	var peakSockets, peakHeld int
	for more(start, soaked()) {
		time.Sleep(10 * time.Millisecond)
		sa, sb := hp.a.Stats(), hp.b.Stats()
		peakSockets = max(peakSockets, sa.Sockets+sb.Sockets)
		peakHeld = max(peakHeld, sa.BuffersHeld()+sb.BuffersHeld())
	}
	wg.Wait()
	el := time.Since(start)
	if b, ok := t.(*testing.B); ok {
		b.StopTimer()
	}
	// Every server goroutine ends once its client is gone: at once when
	// the client's reset arrives, else when B's keepalive probe draws
	// another, and within the dead-peer bound if those are lost too.
	var cfg Config
	cfg.setDefaults()
	waitWithin(t, "B's connections to close", cfg.Timeout+time.Second, func() bool { return hp.b.Stats().Sockets == 1 })
	f, _ := hp.fault.Stats()
	a, b := hp.a.Stats(), hp.b.Stats()
	t.Logf("%v: %d connections (%.0f/s), %d MiB sent; ends: %d graceful, %d client aborts, %d server aborts; %d refused connects retried; %d server receives reset",
		el.Round(time.Millisecond), c.conns.Load(), float64(c.conns.Load())/el.Seconds(), c.bytes.Load()>>20,
		c.ends[soakGraceful].Load(), c.ends[soakClientAbort].Load(), c.ends[soakServerAbort].Load(), c.refused.Load(), c.serverReset.Load())
	t.Logf("hop dropped %d of %d sdx frames; A: %d retransmits, %d resets out; B: %d resets out, %d resets in; at most %d sockets, %d buffers held",
		f.Dropped, f.Eligible, a.Retransmits-a0.Retransmits, a.ResetsOut-a0.ResetsOut, b.ResetsOut-b0.ResetsOut, b.ResetsIn-b0.ResetsIn, peakSockets, peakHeld)
	for end := range soakEnds {
		if c.ends[end].Load() == 0 {
			t.Errorf("no connection ended the %d way", end)
		}
	}
	if f.Dropped == 0 {
		t.Error("the hop dropped nothing")
	}

	// Back to the start: sockets, buffers, operations, goroutines, heap.
	if a, b := hp.a.Stats(), hp.b.Stats(); a.Sockets != a0.Sockets || b.Sockets != b0.Sockets {
		t.Errorf("sockets: A %d, B %d; at the start A %d, B %d", a.Sockets, b.Sockets, a0.Sockets, b0.Sockets)
	}
	hp.b.CloseSocket(ln) // aborts the accept loop's pending accept
	if err := <-serveErr; !errors.Is(err, ErrAborted) {
		t.Errorf("accept loop ended with %v", err)
	}
	servers.Wait()
	checkQuiet(t, hp.a, hp.b)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines0-1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The accept loop was running at the start.
	left := runtime.NumGoroutine() - (goroutines0 - 1)
	if n := runtime.NumGoroutine(); n > goroutines0-1 {
		t.Errorf("%d goroutines after the soak, %d before (with the accept loop)", n, goroutines0)
	}
	// What may stay: the table of closed connections' keys that keeps a
	// late duplicate connect from opening a ghost connection (engine.go,
	// quietKey) is pruned of expired keys only once it holds
	// 4×MaxConnections of them, at about 128 bytes a key; and 2 MiB of
	// slack for the runtime.
	runtime.GC()
	runtime.ReadMemStats(&ms)
	allow := uint64(4*cfg.MaxConnections*128 + 2<<20)
	t.Logf("heap %d KiB before, %d KiB after (%d connections; allowed growth %d KiB)", heap0>>10, ms.HeapAlloc>>10, c.conns.Load(), allow>>10)
	if ms.HeapAlloc > heap0+allow {
		t.Errorf("heap grew from %d KiB to %d KiB over the soak", heap0>>10, ms.HeapAlloc>>10)
	}
	// The links' UMEM frames: Cleanup closes each link, whose Close
	// checks that every frame is back (xdp.ErrFramesHeld otherwise).
	for _, p := range []*Provider{hp.a, hp.b} {
		if err := p.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	t.Logf("links at the end: A %+v; B %+v", hp.la.Counters(), hp.lb.Counters())
	return soakResult{conns: soaked(), bytes: c.bytes.Load() - warmBytes, elapsed: el,
		heapGrowth: int64(ms.HeapAlloc) - int64(heap0), goroutines: max(left, 0)}
}
