package provider

import (
	"errors"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// Tests of CloseSocket, one or more per requirement of issue 4; the table
// in docs/CLOSE.md maps each sentence of the WSPCloseSocket page to them.

var anyPort = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)

// checkClosedErr fails unless err is nil, ENOTSOCK or ENETDOWN: never
// "would block" or "in progress" (point 1).
func checkClosedErr(t testing.TB, err error) {
	t.Helper()
	if err == nil || errors.Is(err, syscall.ENOTSOCK) || errors.Is(err, syscall.ENETDOWN) {
		if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINPROGRESS) {
			t.Fatalf("CloseSocket: %v", err)
		}
		return
	}
	t.Fatalf("CloseSocket returned %v: only nil, ENOTSOCK or ENETDOWN are allowed", err)
}

// Point 1: nil on success, ENOTSOCK for what is not a socket, ENETDOWN
// when the network failed; nothing else.
func TestCloseReturnValues(t *testing.T) {
	tn := newTestNet(t, 21, memnet.Faults{}, 2, nil)
	p := tn.ps[0]
	s := must[Socket](t)(p.Socket())
	if err := p.CloseSocket(s); err != nil {
		t.Fatalf("close of a new socket: %v", err)
	}
	for _, bad := range []Socket{0, s, Socket(1<<32 | 9999), Socket(^uint64(0))} {
		if err := p.CloseSocket(bad); !errors.Is(err, ErrNotSock) {
			t.Fatalf("close of %v: %v", bad, err)
		}
	}
	l := tn.listener(1, 80, 4)
	a, _ := tn.conn(l, 80)
	tn.links[0].SetDown(true)
	err := p.CloseSocket(a)
	if !errors.Is(err, ErrNetDown) {
		t.Fatalf("close with the link down: %v", err)
	}
	checkClosedErr(t, err)
}

// Point 2: after CloseSocket every use of the descriptor fails with
// ENOTSOCK, also after its slot is reused.
func TestCloseStaleDescriptor(t *testing.T) {
	tn := newTestNet(t, 22, memnet.Faults{}, 2, nil)
	p := tn.ps[0]
	l := tn.listener(1, 80, 4)
	old, _ := tn.conn(l, 80)
	if err := p.CloseSocket(old); err != nil {
		t.Fatal(err)
	}
	fresh := must[Socket](t)(p.Socket())
	if fresh.index() != old.index() || fresh == old {
		t.Fatalf("slot not reused: old %v, new %v", old, fresh)
	}
	cq := newCQ(t, p, 8)
	buf := make([]byte, 8)
	uses := map[string]func() error{
		"Send":        func() error { _, err := p.Send(old, buf); return err },
		"Recv":        func() error { _, err := p.Recv(old, buf); return err },
		"Bind":        func() error { return p.Bind(old, anyPort) },
		"Listen":      func() error { return p.Listen(old, 1) },
		"Connect":     func() error { return p.Connect(old, tn.addr(1, 80)) },
		"Accept":      func() error { _, _, err := p.Accept(old); return err },
		"EventSelect": func() error { return p.EventSelect(old, FDRead, func(Socket, Event, error) {}) },
		"GetSockName": func() error { _, err := p.GetSockName(old); return err },
		"GetPeerName": func() error { _, err := p.GetPeerName(old); return err },
		"Duplicate":   func() error { _, err := p.Duplicate(old); return err },
		"Shutdown":    func() error { return p.Shutdown(old) },
		"CloseSocket": func() error { return p.CloseSocket(old) },
		"PostSend":    func() error { return p.PostSend(old, buf, cq, 0) },
		"PostRecv":    func() error { return p.PostRecv(old, buf, cq, 0) },
		"PostAccept":  func() error { return p.PostAccept(old, cq, 0) },
		"PostConnect": func() error { return p.PostConnect(old, tn.addr(1, 80), cq, 0) },
	}
	for name, use := range uses {
		if err := use(); !errors.Is(err, ErrNotSock) {
			t.Errorf("%s on a closed descriptor: %v", name, err)
		}
	}
	// The new socket in the same slot is untouched by all of that.
	if err := p.Connect(fresh, tn.addr(1, 80)); err != nil {
		t.Fatalf("the slot's new socket: %v", err)
	}
	if _, err := p.Send(fresh, []byte("still mine")); err != nil {
		t.Fatal(err)
	}
}

// Point 3: Duplicate; the socket lives until its last descriptor is
// closed, which frees its port at once and discards its queued data.
func TestCloseDuplicate(t *testing.T) {
	tn, l, a, b := connNet(t, 23, memnet.Faults{}, 2, 4, func(c *Config) { c.RecvBuffer = 64 << 10 })
	p0, p1 := tn.ps[0], tn.ps[1]
	d := must[Socket](t)(p0.Duplicate(a))
	if d == a {
		t.Fatal("Duplicate returned the same descriptor")
	}
	if err := p0.CloseSocket(a); err != nil {
		t.Fatal(err)
	}
	// The socket still works through the duplicate.
	if _, err := p0.Send(d, []byte("via dup")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := p1.Recv(b, buf); err != nil || string(buf[:n]) != "via dup" {
		t.Fatalf("recv %q %v", buf[:n], err)
	}
	if _, err := p0.Send(a, buf); !errors.Is(err, ErrNotSock) {
		t.Fatalf("closed descriptor of a live socket: %v", err)
	}
	// Queue data in every place: received and unread at p0, unacked and
	// unsent at p0 (the peer's window is full and it does not read).
	for range 20 {
		p1.Send(b, make([]byte, 1000))
	}
	waitUntil(t, "the state the test waits for", func() bool { st := p0.Stats(); return st.BuffersRecvQueued+st.HeldBuffers > 0 })
	// Cut the path so what is sent stays unacknowledged.
	tn.net.Partition(tn.links[0].LocalAddr(), tn.links[1].LocalAddr(), true)
	cq := newCQ(t, p0, 8)
	big := make([]byte, 1<<20)
	if err := p0.PostSend(d, big, cq, 1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the state the test waits for", func() bool { st := p0.Stats(); return st.BuffersInFlight > 0 && st.BuffersSendQueued > 0 })
	tn.net.Partition(tn.links[0].LocalAddr(), tn.links[1].LocalAddr(), false)
	st := p0.Stats()
	t.Logf("before close: %d recv-queued, %d held by the link, %d in flight, %d send-queued", st.BuffersRecvQueued, st.HeldBuffers, st.BuffersInFlight, st.BuffersSendQueued)
	port := must[netip.AddrPort](t)(p1.GetSockName(l))
	d2 := must[Socket](t)(p1.Duplicate(l))
	if err := p1.CloseSocket(l); err != nil {
		t.Fatal(err)
	}
	// Last descriptor of the connection: everything goes.
	if err := p0.CloseSocket(d); err != nil {
		t.Fatal(err)
	}
	if st := p0.Stats(); st.BuffersHeld() != 0 || st.Sockets != 0 {
		t.Fatalf("after the last close: %d buffers held, %d sockets", st.BuffersHeld(), st.Sockets)
	}
	// The listener's port is still bound through d2; after its last close
	// it can be bound again at once.
	s := must[Socket](t)(p1.Socket())
	if err := p1.Bind(s, port); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("bind while a duplicate lives: %v", err)
	}
	if err := p1.CloseSocket(d2); err != nil {
		t.Fatal(err)
	}
	if err := p1.Bind(s, port); err != nil {
		t.Fatalf("bind right after the last close: %v", err)
	}
}

// Point 4: every pending call and operation completes exactly once with
// ErrAborted, after the memory tied to it was released: the notify
// function looks at the accounting from inside the completion.
func TestCloseAbortsPendingOperations(t *testing.T) {
	tn, l, a, b := connNet(t, 24, memnet.Faults{}, 3, 4, func(c *Config) { c.RecvBuffer = 64 << 10 })
	p0, p1 := tn.ps[0], tn.ps[1]

	type seen struct {
		c        Completion
		held     int
		opsInUse int
	}
	var mu sync.Mutex
	var got []seen
	var cq *CompletionQueue
	cq = must[*CompletionQueue](t)(p0.NewCompletionQueue(64, func(c Completion) {
		st := p0.Stats()
		mu.Lock()
		got = append(got, seen{c, st.BuffersHeld(), st.OpsInUse})
		mu.Unlock()
	}))
	// Data queued in every place, as in TestCloseDuplicate.
	for range 20 {
		p1.Send(b, make([]byte, 1000))
	}
	waitUntil(t, "the state the test waits for", func() bool { st := p0.Stats(); return st.BuffersRecvQueued+st.HeldBuffers > 0 })
	tn.net.Partition(tn.links[0].LocalAddr(), tn.links[1].LocalAddr(), true)
	p0.PostSend(a, make([]byte, 1<<20), cq, 1)
	p0.PostSend(a, make([]byte, 10), cq, 2)
	waitUntil(t, "the state the test waits for", func() bool { st := p0.Stats(); return st.BuffersInFlight > 0 && st.BuffersSendQueued > 0 })
	tn.net.Partition(tn.links[0].LocalAddr(), tn.links[1].LocalAddr(), false)
	// Receives cannot complete while data is queued, so read it on a
	// second socket: use a fresh connection for the receives.
	a2, _ := tn.conn(l, 80)
	p0.PostRecv(a2, make([]byte, 10), cq, 3)
	p0.PostRecv(a2, make([]byte, 10), cq, 4)
	// A pending connect (to a host that does not answer) and accept.
	c := must[Socket](t)(p0.Socket())
	tn.links[2].SetDown(true)
	p0.PostConnect(c, tn.addr(2, 80), cq, 5)
	ls := must[Socket](t)(p0.Socket())
	p0.Bind(ls, netip.AddrPortFrom(netip.IPv4Unspecified(), 90))
	p0.Listen(ls, 1)
	p0.PostAccept(ls, cq, 6)
	// A blocking receive in another goroutine.
	blocked := make(chan error, 1)
	go func() { _, err := p0.Recv(a2, make([]byte, 10)); blocked <- err }()
	time.Sleep(20 * time.Millisecond)
	if n := cq.Len(); n != 0 {
		t.Fatalf("%d completions before any close", n)
	}
	for _, s := range []Socket{a, a2, c, ls} {
		if err := p0.CloseSocket(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-blocked; !errors.Is(err, ErrAborted) || !errors.Is(err, syscall.ECANCELED) {
		t.Fatalf("blocking recv: %v", err)
	}
	time.Sleep(20 * time.Millisecond) // nothing more may come
	mu.Lock()
	defer mu.Unlock()
	count := map[uint64]int{}
	for _, s := range got {
		count[s.c.Context]++
		if !errors.Is(s.c.Err, ErrAborted) {
			t.Errorf("completion %d: %v, want ErrAborted", s.c.Context, s.c.Err)
		}
		if s.held != 0 {
			t.Errorf("completion %d: %d buffers still held when it completed", s.c.Context, s.held)
		}
	}
	for ctx := uint64(1); ctx <= 6; ctx++ {
		if count[ctx] != 1 {
			t.Errorf("operation %d completed %d times", ctx, count[ctx])
		}
	}
	// The pool had already taken each op back when it completed: what is
	// in use at a completion is the posted ops still pending, the blocking
	// receive and the CloseSocket call itself.
	for i, s := range got {
		if pending := len(got) - 1 - i; s.opsInUse > pending+2 || i == 0 && s.opsInUse != pending+2 {
			t.Errorf("completion %d: %d ops in use with %d still pending", s.c.Context, s.opsInUse, pending)
		}
	}
	if n := cq.Poll(make([]Completion, 10)); n != 6 {
		t.Errorf("%d completions queued, want 6", n)
	}
	if st := p0.Stats(); st.BuffersHeld() != 0 || st.OpsInUse != 0 {
		t.Errorf("after the closes: %d buffers, %d ops in use", st.BuffersHeld(), st.OpsInUse)
	}
}

// holdPoller takes the poller role for the test, so it can order input
// and a close by hand; release gives it back.
func holdPoller(t testing.TB, p *Provider) (release func()) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	rw := &roleWait{ch: make(chan struct{}, 1)}
	for !p.role.register(rw, p.nanotime()) {
		p.kick()
		select {
		case <-rw.ch:
		case <-time.After(time.Until(deadline)):
		}
		if p.role.unregister(rw) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("could not take the poller role")
		}
	}
	return func() { p.releaseInline(0, false) }
}

// Point 5: once closure has begun, no notification is posted: a connect
// request processed by a closing listener posts no FD_ACCEPT, a connect
// completing on a closing socket posts no FD_CONNECT, and data arriving
// posts no FD_READ. Point 7: the listener's backlog is reset.
func TestCloseNoNotificationsOnceClosing(t *testing.T) {
	tn := newTestNet(t, 25, memnet.Faults{}, 2, nil)
	p0, p1 := tn.ps[0], tn.ps[1]

	// A listener whose close has begun when the connect request arrives.
	l := tn.listener(1, 80, 4)
	lr := newEvRec()
	p1.EventSelect(l, allEvents, lr.fn)
	cq0 := newCQ(t, p0, 8)
	a := must[Socket](t)(p0.Socket())
	release := holdPoller(t, p1)
	p0.PostConnect(a, tn.addr(1, 80), cq0, 1)
	waitUntil(t, "the state the test waits for", func() bool { return tn.net.Queued() > 0 }) // the request waits at p1
	closed := make(chan error)
	go func() { closed <- p1.CloseSocket(l) }()
	waitUntil(t, "the state the test waits for", func() bool { return p1.subq.Len() > 0 }) // closure has begun
	e := p1.eng
	e.now = p1.nanotime()
	e.receive(e.now) // the connect request reaches the closing listener
	p1.processChanged()
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if lr.has(FDAccept) {
		t.Fatal("FD_ACCEPT posted by a closing listener")
	}
	// The connection it had taken into its backlog was reset (point 7).
	// The connector saw the accept and then the reset, possibly in one
	// batch: its connect completes with nil or ECONNRESET.
	c := make([]Completion, 1)
	cq0.Wait(c, 5*time.Second)
	if c[0].Err != nil && !errors.Is(c[0].Err, ErrConnReset) {
		t.Fatalf("connect: %v", c[0].Err)
	}
	if _, err := p0.Recv(a, make([]byte, 1)); !errors.Is(err, ErrConnReset) {
		t.Fatalf("recv on a connection reset from the backlog: %v", err)
	}

	// A connect whose answer arrives after the close began.
	l = tn.listener(1, 81, 4)
	s := must[Socket](t)(p0.Socket())
	sr := newEvRec()
	p0.EventSelect(s, allEvents, sr.fn)
	release = holdPoller(t, p0)
	e = p0.eng
	e.now = p0.nanotime()
	p0.PostConnect(s, tn.addr(1, 81), cq0, 2)
	p0.drainSubmissions() // the request goes out
	e.transmit()
	waitUntil(t, "the state the test waits for", func() bool { return tn.net.Queued() > 0 }) // the accept is back
	go func() { closed <- p0.CloseSocket(s) }()
	waitUntil(t, "the state the test waits for", func() bool { return p0.subq.Len() > 0 })
	e.receive(e.now)
	p0.processChanged()
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	cq0.Wait(c, 5*time.Second)
	if !errors.Is(c[0].Err, ErrAborted) || c[0].Context != 2 {
		t.Fatalf("connect on a closing socket: %+v, want ErrAborted", c[0])
	}
	if sr.has(FDConnect) || sr.has(FDWrite) {
		t.Fatal("notification posted on a closing socket")
	}

	// Data and a reset arriving at a closing connection: no FD_READ,
	// no FD_CLOSE.
	x, y := tn.conn(l, 81)
	xr := newEvRec()
	p0.EventSelect(x, allEvents, xr.fn)
	xr.wait(t, FDWrite)
	release = holdPoller(t, p0)
	p1.Send(y, []byte("late"))
	p1.CloseSocket(y)
	waitUntil(t, "the state the test waits for", func() bool { return tn.net.Queued() >= 2 })
	go func() { closed <- p0.CloseSocket(x) }()
	waitUntil(t, "the state the test waits for", func() bool { return p0.subq.Len() > 0 })
	e.now = p0.nanotime()
	e.receive(e.now)
	p0.processChanged()
	release()
	<-closed
	if xr.has(FDRead) || xr.has(FDClose) {
		t.Fatalf("notifications on a closing socket: %v", xr.evs)
	}
}

// Point 6: the peer's pending and later receives fail with ECONNRESET,
// also when the reset frame is lost.
func TestCloseResetsPeer(t *testing.T) {
	testutil.CheckGoroutines(t)
	for _, lose := range []bool{false, true} {
		tn, _, a, b := connNet(t, 26, memnet.Faults{}, 2, 4, nil)
		p0, p1 := tn.ps[0], tn.ps[1]
		if lose {
			tn.net.SetFaults(memnet.Faults{Drop: wire.DropOpcodes(wire.OpReset)})
		}
		cq := newCQ(t, p1, 8)
		p1.PostRecv(b, make([]byte, 10), cq, 1)
		if err := p0.CloseSocket(a); err != nil {
			t.Fatal(err)
		}
		c := make([]Completion, 1)
		if lose {
			time.Sleep(10 * time.Millisecond)
			if cq.Len() != 0 {
				t.Fatal("the peer learnt of the close though the reset was lost")
			}
			// Its next frame is answered with a reset; let that one through.
			tn.net.SetFaults(memnet.Faults{})
			if _, err := p1.Send(b, []byte("hello?")); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := cq.Wait(c, 5*time.Second); n != 1 || !errors.Is(c[0].Err, ErrConnReset) {
			t.Fatalf("lose %v: pending recv %+v", lose, c[0])
		}
		if _, err := p1.Recv(b, make([]byte, 10)); !errors.Is(err, ErrConnReset) {
			t.Fatalf("lose %v: later recv %v", lose, err)
		}
		if st := p1.Stats(); st.BuffersHeld() != 0 || st.ResetsIn != 1 {
			t.Fatalf("peer after the reset: %d buffers held, %d resets in", st.BuffersHeld(), st.ResetsIn)
		}
	}
}

// Point 7: closing a listener aborts its pending accepts and resets the
// connections in its backlog.
func TestCloseListener(t *testing.T) {
	tn := newTestNet(t, 27, memnet.Faults{}, 2, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	l := tn.listener(1, 80, 8)
	var conns []Socket
	for range 3 {
		s := must[Socket](t)(p0.Socket())
		if err := p0.Connect(s, tn.addr(1, 80)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, s)
	}
	l2 := tn.listener(1, 81, 8)
	cq := newCQ(t, p1, 8)
	p1.PostAccept(l2, cq, 1)
	p1.PostAccept(l2, cq, 2)
	accepted := make(chan error, 1)
	go func() { _, _, err := p1.Accept(l2); accepted <- err }()
	time.Sleep(10 * time.Millisecond)
	if err := p1.CloseSocket(l); err != nil {
		t.Fatal(err)
	}
	if err := p1.CloseSocket(l2); err != nil {
		t.Fatal(err)
	}
	for _, s := range conns {
		if _, err := p0.Recv(s, make([]byte, 1)); !errors.Is(err, ErrConnReset) {
			t.Fatalf("backlog connection: %v", err)
		}
	}
	c := make([]Completion, 4)
	n := 0
	for n < 2 {
		k, _ := cq.Wait(c[n:], 5*time.Second)
		n += k
	}
	for _, x := range c[:n] {
		if !errors.Is(x.Err, ErrAborted) {
			t.Fatalf("pending accept: %+v", x)
		}
	}
	if err := <-accepted; !errors.Is(err, ErrAborted) {
		t.Fatalf("blocking accept: %v", err)
	}
	if st := p1.Stats(); st.Sockets != 0 || st.BuffersHeld() != 0 || p1.eng.nEps != 0 {
		t.Fatalf("after closing the listeners: %d sockets, %d endpoints, %d buffers", st.Sockets, p1.eng.nEps, st.BuffersHeld())
	}
}

// Point 8: closing with the link down, or after the peer is gone, still
// releases everything; the return value says ENETDOWN where our network
// failed.
func TestCloseNetworkDown(t *testing.T) {
	tn, l, a, _ := connNet(t, 28, memnet.Faults{}, 2, 8, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	b, _ := tn.conn(l, 80)
	for _, s := range []Socket{a, b} {
		p0.PostSend(s, make([]byte, 1<<20), newCQ(t, p0, 2), 0)
	}
	port := must[netip.AddrPort](t)(p0.GetSockName(a))
	waitUntil(t, "the state the test waits for", func() bool { return p0.Stats().BuffersInFlight > 0 })
	tn.links[0].SetDown(true)
	err := p0.CloseSocket(a)
	checkClosedErr(t, err)
	if !errors.Is(err, ErrNetDown) {
		t.Fatalf("close with the link down: %v", err)
	}
	tn.links[0].SetDown(false)
	// The peer's host is gone for good.
	tn.links[1].Close()
	if err := p0.CloseSocket(b); err != nil {
		t.Fatalf("close after the peer vanished: %v", err)
	}
	if st := p0.Stats(); st.BuffersHeld() != 0 || st.Sockets != 0 || st.OpsInUse != 0 {
		t.Fatalf("after the closes: %d buffers, %d sockets, %d ops", st.BuffersHeld(), st.Sockets, st.OpsInUse)
	}
	s := must[Socket](t)(p0.Socket())
	if err := p0.Bind(s, port); err != nil {
		t.Fatalf("port of the closed socket: %v", err)
	}
	_ = p1
}

// Cleanup closes every socket the same way.
func TestCleanupAbortsEverything(t *testing.T) {
	tn, _, a, b := connNet(t, 29, memnet.Faults{}, 2, 8, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	cq := newCQ(t, p0, 8)
	p0.PostRecv(a, make([]byte, 8), cq, 1)
	blocked := make(chan error, 1)
	go func() { _, err := p0.Recv(a, make([]byte, 8)); blocked <- err }()
	time.Sleep(10 * time.Millisecond)
	if err := p0.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; !errors.Is(err, ErrAborted) {
		t.Fatalf("blocking recv at cleanup: %v", err)
	}
	c := make([]Completion, 2)
	if n, _ := cq.Wait(c, time.Second); n != 1 || !errors.Is(c[0].Err, ErrAborted) {
		t.Fatalf("posted recv at cleanup: %d %+v", n, c[0])
	}
	if n, err := cq.Wait(c, -1); n != 0 || !errors.Is(err, ErrNetDown) {
		t.Fatalf("Wait after cleanup: %d %v", n, err)
	}
	if _, err := p0.Socket(); !errors.Is(err, ErrNetDown) {
		t.Fatalf("Socket after cleanup: %v", err)
	}
	if _, err := p0.Send(a, c2b("x")); !errors.Is(err, ErrNotSock) {
		t.Fatalf("Send after cleanup: %v", err)
	}
	if _, err := p1.Recv(b, make([]byte, 8)); !errors.Is(err, ErrConnReset) {
		t.Fatalf("peer after cleanup: %v", err)
	}
	if err := p0.Cleanup(); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
}

func c2b(s string) []byte { return []byte(s) }
