package provider

// A connect flood on the real path: a raw sender on host C sends a burst
// of at least a million connect requests at B's listener, each one a new
// connection (its own id and token), and never answers. Meanwhile a
// server on B keeps accepting, a client on A keeps connecting and
// exchanging a message, a stream from A to B keeps running, and the
// hosts' kernel traffic keeps crossing the same interfaces.

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/wire"
)

// floodServer is the application on B: it accepts every connection, and
// closes one that has said nothing for silentAfter (a flood connection,
// whose connector never sends), or, when more than maxSilent are silent,
// the oldest silent ones: the application's half of a defence, as a TCP
// server sheds idle connections. A connection that sends a byte gets "ok"
// back and is closed when its client closes. It runs on one goroutine
// over a completion queue.
type floodServer struct {
	p           *Provider
	ln          Socket
	cq          *CompletionQueue
	silentAfter time.Duration
	maxSilent   int

	legitPeer netip.Addr // the client's address: its connections are counted apart

	accepted, answered, silentClosed, silentLegit, emfile atomic.Uint64
	floodAccepted                                         atomic.Uint64 // connections from anyone but the client
	maxOpen                                               atomic.Int64
}

type floodConn struct {
	s        Socket
	peer     netip.AddrPort
	at       time.Time
	buf      [1]byte
	legit    bool
	closed   bool
	ctx      uint64
	inFlight int // posted operations not yet completed
}

const ctxAccept = 0

var okMsg = []byte("ok")

func (fs *floodServer) run(stop <-chan struct{}) error {
	const accepts = 16
	conns := make(map[uint64]*floodConn)
	var order []*floodConn // by accept time: the silent ones are closed from the front
	next := uint64(1)
	posted := 0
	comps := make([]Completion, 256)
	closeConn := func(c *floodConn) {
		if !c.closed {
			c.closed = true
			fs.p.CloseSocket(c.s)
		}
	}
	for {
		select {
		case <-stop:
			// Closing the listener aborts the posted accepts.
			fs.p.CloseSocket(fs.ln)
			for _, c := range conns {
				closeConn(c)
			}
			// Reap the aborted operations before the queue goes.
			for deadline := time.Now().Add(5 * time.Second); len(conns) > 0 || posted > 0; {
				n, _ := fs.cq.Wait(comps, 10*time.Millisecond)
				for _, c := range comps[:n] {
					if c.Verb == VerbAccept {
						posted--
						if c.Err == nil {
							fs.p.CloseSocket(c.Accepted)
						}
						continue
					}
					if fc := conns[c.Context]; fc != nil {
						if fc.inFlight--; fc.inFlight == 0 {
							delete(conns, c.Context)
						}
					}
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("flood server: %d connections, %d accepts still pending after its stop", len(conns), posted)
				}
			}
			return nil
		default:
		}
		for posted < accepts {
			if err := fs.p.PostAccept(fs.ln, fs.cq, ctxAccept); err != nil {
				return fmt.Errorf("post accept: %w", err)
			}
			posted++
		}
		n, err := fs.cq.Wait(comps, time.Millisecond)
		if err != nil {
			return err
		}
		for _, c := range comps[:n] {
			switch c.Verb {
			case VerbAccept:
				posted--
				if errors.Is(c.Err, ErrMFile) {
					// Out of descriptors: back off a little before
					// accepting again, as net/http does.
					fs.emfile.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				if c.Err != nil {
					return fmt.Errorf("accept: %w", c.Err)
				}
				fs.accepted.Add(1)
				if c.Peer.Addr() != fs.legitPeer {
					fs.floodAccepted.Add(1)
				}
				fc := &floodConn{s: c.Accepted, peer: c.Peer, at: time.Now(), ctx: next}
				next++
				conns[fc.ctx] = fc
				order = append(order, fc)
				if err := fs.p.PostRecv(fc.s, fc.buf[:], fs.cq, fc.ctx); err != nil {
					return fmt.Errorf("post recv: %w", err)
				}
				fc.inFlight++
			case VerbRecv:
				fc := conns[c.Context]
				fc.inFlight--
				switch {
				case fc.closed:
					// Completed before we closed it, reaped after.
				case c.Err == nil && c.Bytes == 1 && !fc.legit:
					fc.legit = true
					fs.answered.Add(1)
					if err := fs.p.PostSend(fc.s, okMsg, fs.cq, fc.ctx); err != nil {
						return fmt.Errorf("post send: %w", err)
					}
					if err := fs.p.PostRecv(fc.s, fc.buf[:], fs.cq, fc.ctx); err != nil {
						return fmt.Errorf("post recv: %w", err)
					}
					fc.inFlight += 2
				default:
					// The client closed (reset or end of stream), or we
					// aborted it.
					closeConn(fc)
				}
			case VerbSend:
				conns[c.Context].inFlight--
			}
			if fc := conns[c.Context]; c.Verb != VerbAccept && fc != nil && fc.closed && fc.inFlight == 0 {
				delete(conns, c.Context)
			}
		}
		if n == len(comps) {
			continue // reap everything before judging silence
		}
		// Close the connections that stayed silent.
		now := time.Now()
		k := 0
		for k < len(order) && (now.Sub(order[k].at) >= fs.silentAfter || len(order)-k > fs.maxSilent) {
			if c := order[k]; !c.legit && !c.closed {
				fs.silentClosed.Add(1)
				if c.peer.Addr() == fs.legitPeer {
					fs.silentLegit.Add(1)
				}
				closeConn(c)
			}
			k++
		}
		order = append(order[:0], order[k:]...)
		if open := int64(len(conns)); open > fs.maxOpen.Load() {
			fs.maxOpen.Store(open)
		}
	}
}

// floodClient is the legitimate client on A. A session connects, sends
// one byte, waits for "ok" and closes; an attempt that is refused (full
// backlog) or reset (the server shed it before its byte arrived) is
// retried, as any client retries, for up to sessionBound, and counted.
// Sessions run one after another, every interval.
type floodClient struct {
	p  *Provider
	to netip.AddrPort

	sessions, failedSessions, attempts, refused, reset atomic.Uint64
	mu                                                 sync.Mutex
	times                                              []time.Duration // of the sessions that got through
	firstErr                                           atomic.Pointer[error]
}

const sessionBound = 5 * time.Second

func (fc *floodClient) attempt() error {
	fc.attempts.Add(1)
	s, err := fc.p.Socket()
	if err != nil {
		return err
	}
	defer fc.p.CloseSocket(s)
	// A connection that hangs is closed, which aborts the blocked call:
	// the client reports it instead of waiting for ever.
	watchdog := time.AfterFunc(sessionBound, func() { fc.p.CloseSocket(s) })
	defer watchdog.Stop()
	if err := fc.p.Connect(s, fc.to); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := fc.p.Send(s, []byte{'?'}); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 2)
	for got := 0; got < 2; {
		n, err := fc.p.Recv(s, buf[got:])
		if err != nil {
			return fmt.Errorf("recv after %d bytes: %w", got, err)
		}
		if n == 0 {
			return fmt.Errorf("end of stream after %d bytes", got)
		}
		got += n
	}
	if string(buf) != "ok" {
		return fmt.Errorf("answer %q", buf)
	}
	return nil
}

func (fc *floodClient) session() error {
	start := time.Now()
	for {
		err := fc.attempt()
		if err == nil {
			fc.mu.Lock()
			fc.times = append(fc.times, time.Since(start))
			fc.mu.Unlock()
			return nil
		}
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			fc.refused.Add(1)
		case errors.Is(err, syscall.ECONNRESET):
			fc.reset.Add(1)
		default:
			return err
		}
		if time.Since(start) > sessionBound {
			return fmt.Errorf("no answer within %v: last attempt: %w", sessionBound, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func (fc *floodClient) run(stop <-chan struct{}, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		fc.sessions.Add(1)
		if err := fc.session(); err != nil {
			fc.failedSessions.Add(1)
			fc.firstErr.CompareAndSwap(nil, &err)
		}
	}
}

// percentiles describes the sessions' times.
func (fc *floodClient) percentiles() string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.times) == 0 {
		return "(none)"
	}
	ts := slices.Clone(fc.times)
	slices.Sort(ts)
	at := func(q float64) time.Duration { return ts[int(q*float64(len(ts)-1))].Round(time.Microsecond) }
	return fmt.Sprintf("p50 %v, p90 %v, max %v", at(0.5), at(0.9), ts[len(ts)-1].Round(time.Microsecond))
}

// stream runs a seeded stream from p's s to q's r until stop, then ends it
// and reports whether the receiver got exactly what was sent.
func runStream(p, q *Provider, s, r Socket, seed uint64, stop <-chan struct{}, progress *atomic.Int64) (int64, error) {
	got := drainAsync(q, r, seed, 64<<10)
	src := seedStream(seed)
	buf := make([]byte, 16<<10)
	var n int64
	var err error
	for err == nil {
		select {
		case <-stop:
			err = p.Shutdown(s)
			if err == nil {
				d := <-got
				if d.err != nil {
					return n, fmt.Errorf("receive after %d bytes: %w", d.n, d.err)
				}
				if d.n != n {
					return n, fmt.Errorf("received %d of %d bytes", d.n, n)
				}
				return n, nil
			}
		default:
			src.Read(buf)
			_, err = p.Send(s, buf)
			n += int64(len(buf))
			progress.Store(n)
		}
	}
	p.CloseSocket(s)
	<-got
	return n, fmt.Errorf("send after %d bytes: %w", n, err)
}

// TestFloodConnects sends a burst of at least a million connect requests
// from C at B's listener, each a new connection, under two applications
// on B: one that sheds connections that stay silent (its clients send at
// once) and one that hoards every connection it can accept. C never
// answers, so its connections stay half-open: at most the backlog's
// worth at a time, and past that B answers with a stateless retry. None
// reaches the application. B's memory stays within its bound (endpoints:
// the half-open limit plus the live connections; no data buffers taken by
// the flood; the heap back to its start once the flood ends). A client on
// A gets every session through, each connect at the first attempt; a
// stream from A keeps arriving byte-exact; and kernel TCP, UDP, ICMP and
// ARP keep working on the same interfaces.
func TestFloodConnects(t *testing.T) {
	for i, c := range []struct {
		name        string
		silentAfter time.Duration
		maxSilent   int
	}{
		{"shedding", 200 * time.Millisecond, 256},
		{"hoarding", time.Hour, 1 << 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			floodConnects(t, uint8(50+i), c.silentAfter, c.maxSilent)
		})
	}
}

// floodCfg is B's configuration in the flood tests: the default buffers,
// a smaller table so that the hoarding server reaches its limits.
var floodCfg = Config{MaxSockets: 512, MaxConnections: 1024}

// endpointBytes is what one endpoint costs the heap at least while it
// lives, at cfg's buffer sizes: the rings initConn gives it and the
// structs. It is the unit of the flood tests' memory bound.
func endpointBytes(cfg Config, mss int) int {
	cfg.setDefaults()
	segs := pow2(cfg.SendBuffer/mss + 2)
	oooMax := max(16, 2*(cfg.RecvBuffer/mss+1))
	rq := pow2(cfg.RecvBuffer/mss + 2 + oooMax)
	return segs*int(unsafe.Sizeof(seg{})) + rq*int(unsafe.Sizeof(rseg{})) + oooMax*int(unsafe.Sizeof(oseg{})) +
		int(unsafe.Sizeof(endpoint{})) + int(unsafe.Sizeof(socket{}))
}

func floodConnects(t *testing.T, subnet uint8, silentAfter time.Duration, maxSilent int) {
	hp, raw := newForger(t, subnet, floodCfg, false)
	const backlog = 64
	ln := hp.listen(t, backlog)
	requests := scaled(1_000_000, 100_000)

	// The live connection, before the server takes over the listener.
	s, r := hp.connectPair(t, ln)

	// Room for an accept or a receive of every socket B can have.
	cq := newCQ(t, hp.b, 2048)
	srv := &floodServer{p: hp.b, ln: ln, cq: cq, silentAfter: silentAfter, maxSilent: maxSilent, legitPeer: hp.hop.A.Addr}
	cli := &floodClient{p: hp.a, to: netip.AddrPortFrom(hp.hop.B.Addr, hp.portB)}
	stop, stopClient := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- srv.run(stop) }()
	clientDone := make(chan struct{})
	go func() { defer close(clientDone); cli.run(stopClient, 10*time.Millisecond) }()
	var streamed int64
	var progress atomic.Int64
	go func() {
		defer wg.Done()
		var err error
		streamed, err = runStream(hp.a, hp.b, s, r, 3, stop, &progress)
		if err != nil {
			errs <- fmt.Errorf("live stream: %w", err)
		}
	}()
	hostErr := make(chan error, 1)
	hostCheck := func() {
		// Kernel traffic on the same interfaces, during the flood.
		ht := &recordingTB{TB: t}
		defer func() { hostErr <- ht.err() }()
		checkHostTraffic(ht, hp.hop)
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0, peakHeap := ms.HeapAlloc, ms.HeapAlloc
	b0 := hp.b.Stats()
	var peakSockets, peakHeld, peakEndpoints, peakHalf int
	sample := func() {
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapAlloc)
		st := hp.b.Stats()
		peakSockets = max(peakSockets, st.Sockets)
		peakHeld = max(peakHeld, st.BuffersHeld())
		peakEndpoints = max(peakEndpoints, st.Endpoints)
		peakHalf = max(peakHalf, st.HalfOpen)
	}

	cEnd, bEnd := endpointOf(&hp.hop.C), endpointOf(&hp.hop.B)
	h := wire.Header{Op: wire.OpConnect, DstPort: hp.portB, Window: 256 << 10}
	var replies [wire.NumOpcodes]uint64
	count := func(_ *frame.Parsed, h *wire.Header, _ []byte) { replies[h.Op]++ }
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	lastSample := start
	streamed0 := progress.Load()
	sent := 0
	// The flood goes on past its count, up to four times it, until the
	// client has connected once while the half-open limit held (a
	// cookie): on a loaded machine its connects may all fall in gaps.
	tookCookie := func() bool { return hp.b.Stats().CookiesIn > b0.CookiesIn }
	for (sent < requests || sent < 4*requests && !tookCookie()) && time.Now().Before(deadline) {
		for range 64 {
			sent++
			h.SrcConn = uint32(sent)
			h.SrcPort = uint16(1024 + sent%60000)
			h.Token = uint64(sent)*0x9e3779b97f4a7c15 | 1
			for !raw.queue(cEnd, bEnd, &h, nil, nil) {
				if err := raw.flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := raw.flush(); err != nil {
			t.Fatal(err)
		}
		raw.receive(count)
		// The sender shares the test's two Ps with both providers: it
		// yields, as a flood from another machine would not compete for
		// them at all.
		runtime.Gosched()
		if sent == requests/4/64*64 {
			go hostCheck()
		}
		if time.Since(lastSample) > 20*time.Millisecond {
			sample()
			lastSample = time.Now()
		}
	}
	floodTime := time.Since(start)
	streamedDuring := progress.Load() - streamed0
	// Let B catch up, then stop the application. The flood's half-open
	// connections go by themselves once their accepts are unanswered.
	time.Sleep(200 * time.Millisecond)
	raw.receive(count)
	sample()
	waitWithin(t, "B's half-open connections to expire", 5*time.Second, func() bool { return hp.b.Stats().HalfOpen == 0 })
	raw.receive(count)
	close(stopClient)
	<-clientDone
	close(stop)
	wg.Wait()
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := <-hostErr; err != nil {
		t.Errorf("host traffic during the flood: %v", err)
	}
	b := hp.b.Stats()
	in := b.DatagramsIn - b0.DatagramsIn
	t.Logf("flood: %d connect requests in %v (%.0f/s); B took in %d datagrams, sent %d retries, %d accepts to half-open connections (%d dropped unanswered), rejected %d, reset %d; C got %d retries, %d accepts, %d rejects, %d resets",
		sent, floodTime.Round(time.Millisecond), float64(sent)/floodTime.Seconds(), in, b.RetriesOut-b0.RetriesOut,
		replies[wire.OpAccept], b.HalfOpenExpired-b0.HalfOpenExpired, b.RejectsOut-b0.RejectsOut, b.ResetsOut-b0.ResetsOut,
		replies[wire.OpRetry], replies[wire.OpAccept], replies[wire.OpReject], replies[wire.OpReset])
	t.Logf("server: %d accepted (%d from the flood), %d closed silent (%d of them the client's), %d answered, %d EMFILE, at most %d open; client: %d sessions (%d failed) in %d attempts (%d refused, %d reset), session times %s; B took %d cookies (%d bad)",
		srv.accepted.Load(), srv.floodAccepted.Load(), srv.silentClosed.Load(), srv.silentLegit.Load(), srv.answered.Load(), srv.emfile.Load(), srv.maxOpen.Load(),
		cli.sessions.Load(), cli.failedSessions.Load(), cli.attempts.Load(), cli.refused.Load(), cli.reset.Load(),
		cli.percentiles(), b.CookiesIn-b0.CookiesIn, b.Drops.BadCookie-b0.Drops.BadCookie)
	t.Logf("live stream: %d MiB in all, %.1f MiB during the flood (%.1f MB/s)", streamed>>20, float64(streamedDuring)/(1<<20), float64(streamedDuring)/floodTime.Seconds()/1e6)
	// The bound: the half-open connections (one backlog's worth) and the
	// live ones (the listener, the stream's two ends, the client's
	// sessions: a few), plus room for the stream's buffers and the
	// garbage collector's headroom.
	cfg := floodCfg
	cfg.setDefaults()
	unit := endpointBytes(cfg, hp.lb.MTU()-wire.HeaderLen)
	const live = 16
	endpointBound := b0.Endpoints + backlog + live
	bound := uint64(2*endpointBound*unit) + 48<<20
	t.Logf("B: at most %d endpoints (%d half-open, %d sockets), %d buffers held; heap %d MiB before, at most %d MiB during (+%d MiB; bound %d MiB: %d endpoints of %d KiB, twice, + 48 MiB)",
		peakEndpoints, peakHalf, peakSockets, peakHeld, heap0>>20, peakHeap>>20, (peakHeap-heap0)>>20, bound>>20, endpointBound, unit>>10)
	if sent < requests {
		t.Errorf("sent %d of %d connect requests in %v", sent, requests, floodTime)
	}
	// The flood sender and B's poller take both CPUs of a small machine,
	// so the stream slows down; it must not stop.
	if streamedDuring == 0 {
		t.Error("the live stream moved nothing during the flood")
	}
	if peakHalf > backlog {
		t.Errorf("B had %d half-open connections; the limit is the backlog, %d", peakHalf, backlog)
	}
	if peakEndpoints > endpointBound {
		t.Errorf("B had %d endpoints; want at most %d: %d before, %d half-open, %d live", peakEndpoints, endpointBound, b0.Endpoints, backlog, live)
	}
	// The flood carries no data: what B held was the stream's.
	if limit := 2 * (cfg.RecvBuffer/(hp.lb.MTU()-wire.HeaderLen) + 2); peakHeld > limit {
		t.Errorf("B held %d buffers; one stream's receive buffer is %d", peakHeld, limit)
	}
	if peakHeap-heap0 > bound {
		t.Errorf("heap grew by %d MiB during the flood; bound %d MiB", (peakHeap-heap0)>>20, bound>>20)
	}
	if b.RetriesOut == b0.RetriesOut || b.HalfOpenExpired == b0.HalfOpenExpired {
		t.Errorf("B sent %d retries and dropped %d half-open connections: the flood never reached the half-open limit",
			b.RetriesOut-b0.RetriesOut, b.HalfOpenExpired-b0.HalfOpenExpired)
	}
	if n := srv.floodAccepted.Load(); n > 0 {
		t.Errorf("the application accepted %d connections from the flood; want none (C never answers)", n)
	}
	// Every session gets through, and no connect is refused: the backlog
	// holds only connections whose connector answered.
	n, failed := cli.sessions.Load(), cli.failedSessions.Load()
	if e := cli.firstErr.Load(); e != nil {
		t.Errorf("legitimate client: %d of %d sessions failed; first: %v", failed, n, *e)
	}
	if n == 0 || cli.refused.Load() > 0 {
		t.Errorf("legitimate client: %d sessions, %d connects refused; want sessions and no refusal", n, cli.refused.Load())
	}
	if b.CookiesIn == b0.CookiesIn {
		t.Error("B took no cookie: the client never connected while the half-open limit was reached")
	}
	// Once the connections are gone, so is their memory: nothing grows
	// with the number of requests.
	checkQuiet(t, hp.a, hp.b)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("heap after the flood: %d MiB", ms.HeapAlloc>>20)
	if ms.HeapAlloc > heap0+8<<20 {
		t.Errorf("heap %d MiB after the flood, %d MiB before: %d bytes per request stayed", ms.HeapAlloc>>20, heap0>>20, (ms.HeapAlloc-heap0)/uint64(sent))
	}
}

// recordingTB is a testing.TB for a helper run on another goroutine: it
// records the first error instead of failing the test from there.
type recordingTB struct {
	testing.TB
	mu    sync.Mutex
	first error
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first == nil {
		r.first = fmt.Errorf(format, args...)
	}
}
func (r *recordingTB) Fatal(args ...any) {
	r.Errorf("%s", fmt.Sprint(args...))
	runtime.Goexit()
}
func (r *recordingTB) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first
}
