package provider

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

func TestSteadyStateAllocs(t *testing.T) {
	testutil.CheckGoroutines(t)
	for _, mode := range []PollMode{PollAdaptive, PollBusy} {
		t.Run(mode.String(), func(t *testing.T) {
			p, a, wait := echoNet(t, 5, mode)
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			blocking := func() { roundTrip(t, p, a, msg, buf) }
			for range 1000 { // warm up: pools, rings, timers
				blocking()
			}
			if n := testing.AllocsPerRun(2000, blocking); n != 0 {
				t.Errorf("blocking send+recv: %v allocations per round trip", n)
			}
			// The overlapped path: post, then reap.
			cq, err := p.NewCompletionQueue(16, nil)
			if err != nil {
				t.Fatal(err)
			}
			comps := make([]Completion, 4)
			overlapped := func() {
				if err := p.PostRecv(a, buf, cq, 1); err != nil {
					t.Fatal(err)
				}
				if err := p.PostSend(a, msg, cq, 2); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < 2; {
					n, err := cq.Wait(comps, -1)
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range comps[:n] {
						if c.Err != nil || c.Bytes != len(msg) {
							t.Fatalf("completion %+v", c)
						}
					}
					got += n
				}
			}
			for range 1000 {
				overlapped()
			}
			if n := testing.AllocsPerRun(2000, overlapped); n != 0 {
				t.Errorf("posted send+recv: %v allocations per round trip", n)
			}
			p.CloseSocket(a)
			wait()
		})
	}
}

func TestOverlappedCompletions(t *testing.T) {
	tn := newTestNet(t, 6, memnet.Faults{Loss: 0.02, Reorder: 0.02}, 2, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	cq0 := newCQ(t, p0, 64)
	cq1 := newCQ(t, p1, 64)
	l := tn.listener(1, 80, 4)
	if err := p1.PostAccept(l, cq1, 100); err != nil {
		t.Fatal(err)
	}
	a := must[Socket](t)(p0.Socket())
	if err := p0.PostConnect(a, tn.addr(1, 80), cq0, 200); err != nil {
		t.Fatal(err)
	}
	c := make([]Completion, 8)
	n, _ := cq0.Wait(c, 5*time.Second)
	if n != 1 || c[0].Verb != VerbConnect || c[0].Context != 200 || c[0].Err != nil || c[0].Socket != a {
		t.Fatalf("connect completion %d %+v", n, c[0])
	}
	n, _ = cq1.Wait(c, 5*time.Second)
	if n != 1 || c[0].Verb != VerbAccept || c[0].Context != 100 || c[0].Err != nil || c[0].Accepted == 0 ||
		c[0].Peer != must[netip.AddrPort](t)(p0.GetSockName(a)) {
		t.Fatalf("accept completion %d %+v", n, c[0])
	}
	b := c[0].Accepted
	// Several receives posted before any data: they complete in order.
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 10)
		if err := p1.PostRecv(b, bufs[i], cq1, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCD")
	for i := 0; i < len(data); i += 20 {
		if err := p0.PostSend(a, data[i:i+20], cq0, uint64(1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	for i := 0; i < 4; {
		n, _ := cq1.Wait(c, 5*time.Second)
		for _, x := range c[:n] {
			if x.Verb != VerbRecv || x.Context != uint64(i) || x.Err != nil {
				t.Fatalf("recv completion %d: %+v", i, x)
			}
			got = append(got, bufs[i][:x.Bytes]...)
			i++
		}
	}
	for len(got) < len(data) {
		buf := make([]byte, 64)
		n, err := p1.Recv(b, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %q", got)
	}
	for i := 0; i < 2; {
		n, _ := cq0.Wait(c, 5*time.Second)
		for _, x := range c[:n] {
			if x.Verb != VerbSend || x.Context != uint64(1000+20*i) || x.Bytes != 20 || x.Err != nil {
				t.Fatalf("send completion %d: %+v", i, x)
			}
			i++
		}
	}
	// The queue refuses posts past its size instead of overflowing.
	small := newCQ(t, p1, 2)
	buf := make([]byte, 1)
	for i := range 3 {
		err := p1.PostRecv(b, buf, small, 0)
		if (i < 2) != (err == nil) || i == 2 && !errors.Is(err, ErrNoBufs) {
			t.Fatalf("post %d to a queue of 2: %v", i, err)
		}
	}
	if n, err := small.Wait(c, 0); n != 0 || err != nil {
		t.Fatalf("Wait(0) on nothing: %d %v", n, err)
	}
	// Errors of posts.
	if err := p1.PostRecv(b, nil, cq1, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty receive buffer: %v", err)
	}
	if err := p1.PostRecv(b, buf, nil, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no queue: %v", err)
	}
	if err := p1.PostRecv(Socket(12345), buf, cq1, 0); !errors.Is(err, ErrNotSock) {
		t.Fatalf("bad descriptor: %v", err)
	}
	s := must[Socket](t)(p1.Socket())
	if _, err := p1.Send(s, buf); !errors.Is(err, ErrNotConn) {
		t.Fatalf("send unconnected: %v", err)
	}
	if err := p1.PostAccept(s, cq1, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := cq1.Wait(c, 5*time.Second); n != 1 || !errors.Is(c[0].Err, ErrInvalid) {
		t.Fatalf("accept on a socket not listening: %+v", c[0])
	}
}

// allEvents selects every event.
const allEvents = FDRead | FDWrite | FDAccept | FDConnect | FDClose

type evRec struct {
	mu  sync.Mutex
	evs []Event
	err []error
	ch  chan struct{}
}

func newEvRec() *evRec { return &evRec{ch: make(chan struct{}, 100)} }

func (r *evRec) fn(_ Socket, ev Event, err error) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.err = append(r.err, err)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// wait waits for event ev and returns its error.
func (r *evRec) wait(t testing.TB, ev Event) error {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		for i, e := range r.evs {
			if e == ev {
				err := r.err[i]
				r.evs = append(r.evs[:i], r.evs[i+1:]...)
				r.err = append(r.err[:i], r.err[i+1:]...)
				r.mu.Unlock()
				return err
			}
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("no %v; have %v", ev, r.evs)
		}
	}
}

func (r *evRec) has(ev Event) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.evs {
		if e == ev {
			return true
		}
	}
	return false
}

func TestEventSelect(t *testing.T) {
	tn := newTestNet(t, 7, memnet.Faults{}, 2, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	l := tn.listener(1, 80, 4)
	lr := newEvRec()
	if err := p1.EventSelect(l, allEvents, lr.fn); err != nil {
		t.Fatal(err)
	}
	a := must[Socket](t)(p0.Socket())
	ar := newEvRec()
	if err := p0.EventSelect(a, allEvents, ar.fn); err != nil {
		t.Fatal(err)
	}
	cq := newCQ(t, p0, 8)
	if err := p0.PostConnect(a, tn.addr(1, 80), cq, 0); err != nil {
		t.Fatal(err)
	}
	if err := ar.wait(t, FDConnect); err != nil {
		t.Fatalf("FD_CONNECT: %v", err)
	}
	ar.wait(t, FDWrite)
	lr.wait(t, FDAccept)
	b, _, err := p1.Accept(l)
	if err != nil {
		t.Fatal(err)
	}
	br := newEvRec()
	p1.EventSelect(b, allEvents, br.fn)
	br.wait(t, FDWrite) // already writable: reported at once
	p0.Send(a, []byte("x"))
	br.wait(t, FDRead)
	// Not again until a receive re-enables it.
	p0.Send(a, []byte("y"))
	time.Sleep(10 * time.Millisecond)
	if br.has(FDRead) {
		t.Fatal("FD_READ posted twice without a receive")
	}
	buf := make([]byte, 10)
	p1.Recv(b, buf)
	p0.Send(a, []byte("z"))
	br.wait(t, FDRead)
	// The peer's half close is FD_CLOSE with no error.
	p0.Shutdown(a)
	if err := br.wait(t, FDClose); err != nil {
		t.Fatalf("FD_CLOSE after disconnect: %v", err)
	}
	// A reset is FD_CLOSE with ECONNRESET.
	p1.CloseSocket(b)
	if err := ar.wait(t, FDClose); !errors.Is(err, ErrConnReset) {
		t.Fatalf("FD_CLOSE after reset: %v", err)
	}
	// A refused connect is FD_CONNECT with ECONNREFUSED, and no FD_CLOSE.
	c := must[Socket](t)(p0.Socket())
	cr := newEvRec()
	p0.EventSelect(c, allEvents, cr.fn)
	p0.PostConnect(c, tn.addr(1, 81), cq, 0)
	if err := cr.wait(t, FDConnect); !errors.Is(err, ErrConnRefused) {
		t.Fatalf("FD_CONNECT refused: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
	if cr.has(FDClose) {
		t.Fatal("FD_CLOSE after a refused connect")
	}
	if err := p0.EventSelect(c, FDRead, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("EventSelect without a function: %v", err)
	}
}

func TestDeadPeerTimesOut(t *testing.T) {
	testutil.CheckGoroutines(t)
	const bound = 300 * time.Millisecond
	tn, l, a, _ := connNet(t, 8, memnet.Faults{}, 2, 4, func(c *Config) { c.Timeout = bound; c.MaxRTO = 100 * time.Millisecond })
	p0, p1 := tn.ps[0], tn.ps[1]
	a2, _ := tn.conn(l, 80)
	cq := newCQ(t, p0, 8)
	buf := make([]byte, 10)
	p0.PostRecv(a2, buf, cq, 7)
	tn.links[1].SetDown(true) // the peer vanishes
	start := time.Now()
	if _, err := p0.Send(a, make([]byte, 50000)); err != nil {
		t.Fatal(err)
	}
	_, err := p0.Recv(a, buf)
	d := time.Since(start)
	if !errors.Is(err, ErrTimedOut) || d > bound+100*time.Millisecond {
		t.Fatalf("recv from a dead peer: %v after %v, bound %v", err, d, bound)
	}
	c := make([]Completion, 1)
	if n, _ := cq.Wait(c, 2*bound); n != 1 || !errors.Is(c[0].Err, ErrTimedOut) {
		t.Fatalf("posted recv: %+v", c[0])
	}
	if _, err := p0.Send(a, buf); !errors.Is(err, ErrTimedOut) {
		t.Fatalf("send after the time-out: %v", err)
	}
	if st := p0.Stats(); st.DeadPeers != 2 || st.BuffersHeld() != 0 {
		t.Fatalf("dead peers %d, buffers held %d", st.DeadPeers, st.BuffersHeld())
	}
	_ = p1
}

func TestSlowReaderBoundedMemory(t *testing.T) {
	tn, _, a, b := connNet(t, 9, memnet.Faults{Loss: 0.01}, 2, 4, func(c *Config) { c.SendBuffer, c.RecvBuffer = 64<<10, 32<<10 })
	p0, p1 := tn.ps[0], tn.ps[1]
	size := 4 << 20
	if testing.Short() {
		size = 512 << 10
	}
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i * 7 / 3)
	}
	done := make(chan error, 1)
	go func() { _, err := p0.Send(a, src); done <- err }()
	var got []byte
	buf := make([]byte, 8192)
	maxHeld := [2]int{}
	for len(got) < size {
		n, err := p1.Recv(b, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		for i, p := range tn.ps {
			maxHeld[i] = max(maxHeld[i], p.Stats().BuffersHeld())
		}
		if len(got)%(64<<10) < n {
			time.Sleep(time.Millisecond) // a slow reader
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src) {
		t.Fatal("data differs")
	}
	mss := tn.links[0].MTU() - wire.HeaderLen
	if maxHeld[0] > 64<<10/mss+3 || maxHeld[1] > 2*(32<<10/mss+3) {
		t.Fatalf("buffers held: sender %d, receiver %d", maxHeld[0], maxHeld[1])
	}
	t.Logf("buffers held at most: sender %d, receiver %d", maxHeld[0], maxHeld[1])
}

func TestTableLimits(t *testing.T) {
	tn := newTestNet(t, 10, memnet.Faults{}, 2, func(c *Config) { c.MaxSockets, c.MaxConnections = 4, 4 })
	p0, p1 := tn.ps[0], tn.ps[1]
	var ss []Socket
	for range 4 {
		ss = append(ss, must[Socket](t)(p0.Socket()))
	}
	if _, err := p0.Socket(); !errors.Is(err, ErrMFile) {
		t.Fatalf("socket past the table: %v", err)
	}
	if _, err := p0.Duplicate(ss[0]); !errors.Is(err, ErrMFile) {
		t.Fatalf("duplicate past the table: %v", err)
	}
	p0.CloseSocket(ss[3])
	if _, err := p0.Duplicate(ss[0]); err != nil {
		t.Fatalf("duplicate after a close: %v", err)
	}
	// A listener whose provider has no room for another connection
	// rejects at once.
	tn.listener(1, 80, 8)
	for range 3 { // the listener and these fill p1's four endpoints
		must[Socket](t)(p1.Socket())
	}
	if err := p0.Connect(ss[1], tn.addr(1, 80)); !errors.Is(err, ErrConnRefused) {
		t.Fatalf("connect to a full provider: %v", err)
	}
	if st := p1.Stats(); st.RejectsOut != 1 {
		t.Fatalf("rejects %d", st.RejectsOut)
	}
}

func TestShutdownEndOfStream(t *testing.T) {
	tn, _, a, b := connNet(t, 11, memnet.Faults{Loss: 0.05, Reorder: 0.05}, 2, 4, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	msg := bytes.Repeat([]byte("end of stream "), 1000)
	if _, err := p0.Send(a, msg); err != nil {
		t.Fatal(err)
	}
	if err := p0.Shutdown(a); err != nil {
		t.Fatal(err)
	}
	if _, err := p0.Send(a, msg); !errors.Is(err, ErrShutdown) {
		t.Fatalf("send after shutdown: %v", err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := p1.Recv(b, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("%d bytes before end of stream, want %d", len(got), len(msg))
	}
	if n, err := p1.Recv(b, buf); n != 0 || err != nil {
		t.Fatalf("recv after end of stream: %d %v", n, err)
	}
	// The other direction is still open.
	if _, err := p1.Send(b, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if n, err := p0.Recv(a, buf); err != nil || string(buf[:n]) != "bye" {
		t.Fatalf("half-closed side receives %q %v", buf[:n], err)
	}
}
