package provider

// CloseSocket on the real AF_XDP path: the points of docs/CLOSE.md that the
// network can change, each on a veth testbed. The in-memory tests in
// close_test.go cover the same points deterministically.

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/xdp"
)

// Points 1, 2, 3 and 6: CloseSocket returns nil, later uses of the
// descriptor fail with ENOTSOCK even after the slot is reused, the port can
// be bound again at once, queued data is discarded, and the peer's pending
// and later receives fail with ECONNRESET.
func TestVethCloseResetsPeer(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := newVethPair(t, Config{})
	a, b := p.connectPair(t, p.listen(t, 4))
	local, err := p.a.GetSockName(a)
	if err != nil {
		t.Fatal(err)
	}
	// Leave data queued both ways: unread at a, and a blocked receive at b.
	if _, err := p.b.Send(b, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	recvErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			if _, err := p.b.Recv(b, buf); err != nil {
				recvErr <- err
				return
			}
		}
	}()
	time.Sleep(10 * time.Millisecond)
	if _, err := p.a.Send(a, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.a.CloseSocket(a); err != nil {
		t.Fatalf("close: %v", err)
	}
	if held := p.a.Stats().BuffersHeld(); held != 0 {
		t.Fatalf("%d buffers still hold the closed socket's data", held)
	}
	waitReset(t, recvErr, 2*time.Second, "peer's pending receive")
	t.Logf("peer saw ECONNRESET %v after the close", time.Since(start))
	if _, err := p.b.Recv(b, make([]byte, 8)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer's later receive: %v, want ECONNRESET", err)
	}
	// The port is free at once, and the stale descriptor reaches nothing,
	// also once a new socket may have taken its slot.
	n, err := p.a.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.a.Bind(n, local); err != nil {
		t.Fatalf("rebinding the closed socket's %v: %v", local, err)
	}
	for name, err := range map[string]error{
		"send":  second(p.a.Send(a, []byte("x"))),
		"recv":  second(p.a.Recv(a, make([]byte, 1))),
		"name":  second(p.a.GetSockName(a)),
		"close": p.a.CloseSocket(a),
	} {
		if !errors.Is(err, syscall.ENOTSOCK) {
			t.Errorf("%s on the closed descriptor: %v, want ENOTSOCK", name, err)
		}
	}
	p.a.CloseSocket(n)
	p.b.CloseSocket(b)
}

func second[T any](_ T, err error) error { return err }

// Point 3: with a duplicate, closing one descriptor leaves the connection
// working; closing the last one releases it.
func TestVethCloseDuplicate(t *testing.T) {
	p := newVethPair(t, Config{})
	a, b := p.connectPair(t, p.listen(t, 4))
	d, err := p.a.Duplicate(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.a.CloseSocket(a); err != nil {
		t.Fatal(err)
	}
	if _, err := p.a.Send(d, []byte("still here")); err != nil {
		t.Fatalf("send through the duplicate: %v", err)
	}
	buf := make([]byte, 32)
	if n, err := p.b.Recv(b, buf); err != nil || string(buf[:n]) != "still here" {
		t.Fatalf("peer received %q, %v", buf[:n], err)
	}
	if err := p.a.CloseSocket(d); err != nil {
		t.Fatal(err)
	}
	if _, err := p.b.Recv(b, buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the last close the peer got %v, want ECONNRESET", err)
	}
	p.b.CloseSocket(b)
}

// Points 4 and 7: closing a listener aborts its pending accepts and resets
// the connections still in its backlog; closing a connection aborts its
// posted receives, each exactly once.
func TestVethCloseAbortsPending(t *testing.T) {
	p := newVethPair(t, Config{})
	ln := p.listen(t, 4)
	queued := p.dial(t) // accepted by nobody: in the backlog
	cq, err := p.b.NewCompletionQueue(16, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.b.PostAccept(ln, cq, 1); err != nil {
		t.Fatal(err)
	}
	// The posted accept takes the queued connection; the next one has
	// nothing to take and stays pending.
	c := waitCompletion(t, cq)
	if c.Err != nil || c.Context != 1 {
		t.Fatalf("first accept: %+v", c)
	}
	if err := p.b.PostAccept(ln, cq, 4); err != nil {
		t.Fatal(err)
	}
	if err := p.b.CloseSocket(ln); err != nil {
		t.Fatal(err)
	}
	c4 := waitCompletion(t, cq)
	if c4.Context != 4 || !errors.Is(c4.Err, ErrAborted) {
		t.Fatalf("pending accept after the listener closed: %+v, want ErrAborted", c4)
	}
	if extra := cq.Poll(make([]Completion, 4)); extra != 0 {
		t.Fatalf("%d more completions after the abort", extra)
	}

	// A connection left in a closed listener's backlog is reset.
	p.portB++
	ln2 := p.listen(t, 4)
	orphan := p.dial(t)
	if err := p.b.CloseSocket(ln2); err != nil {
		t.Fatal(err)
	}
	if _, err := p.a.Recv(orphan, make([]byte, 8)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection in a closed listener's backlog: %v, want ECONNRESET", err)
	}

	// Posted receives on a connection complete with ErrAborted once.
	acq, err := p.a.NewCompletionQueue(16, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := p.a.PostRecv(queued, make([]byte, 64), acq, uint64(10+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.a.CloseSocket(queued); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for range 3 {
		c := waitCompletion(t, acq)
		if !errors.Is(c.Err, ErrAborted) || seen[c.Context] {
			t.Fatalf("posted receive: %+v (seen %v)", c, seen)
		}
		seen[c.Context] = true
	}
	if extra := acq.Poll(make([]Completion, 4)); extra != 0 {
		t.Fatalf("%d more completions after the aborts", extra)
	}
}

func waitCompletion(t testing.TB, cq *CompletionQueue) Completion {
	t.Helper()
	var out [1]Completion
	n, err := cq.Wait(out[:], 2*time.Second)
	if err != nil || n != 1 {
		t.Fatalf("no completion within 2s: %v", err)
	}
	return out[0]
}

// Point 8: with the interface down, CloseSocket still releases everything
// and reports ENETDOWN.
func TestVethCloseNetworkDown(t *testing.T) {
	p := newVethPair(t, Config{})
	a, b := p.connectPair(t, p.listen(t, 4))
	if _, err := p.a.Send(a, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if err := testbed.IP("-n", p.bed.A.NS, "link", "set", "dev", p.bed.A.If, "down"); err != nil {
		t.Fatal(err)
	}
	err := p.a.CloseSocket(a)
	if !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("close with the interface down: %v, want ENETDOWN", err)
	}
	if le := (*xdp.LinkError)(nil); !errors.As(err, &le) {
		t.Errorf("close with the interface down: %v (%T), want the link's *xdp.LinkError", err, err)
	}
	// The connection holds nothing; the link still holds the buffers of
	// frames it could not send (they are UMEM frames), until it can.
	if st := p.a.Stats(); st.BuffersHeld() != st.BuffersSending || st.Sockets != 0 {
		t.Fatalf("close with the interface down left %d buffers (%d of them the link's), %d sockets", st.BuffersHeld(), st.BuffersSending, st.Sockets)
	}
	if err := p.a.CloseSocket(a); !errors.Is(err, syscall.ENOTSOCK) {
		t.Fatalf("second close: %v", err)
	}
	if err := testbed.IP("-n", p.bed.A.NS, "link", "set", "dev", p.bed.A.If, "up"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for p.a.Stats().BuffersHeld() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := p.a.Stats(); st.BuffersHeld() != 0 {
		t.Fatalf("with the interface up again, %d buffers still held (%d sending)", st.BuffersHeld(), st.BuffersSending)
	}
	p.b.CloseSocket(b)
}

// Point 9 on the real path: CloseSocket racing posts, blocking calls,
// Duplicate and CloseSocket from 8 goroutines over seeded interleavings,
// with the same checks as TestConcurrentClose.
func TestVethConcurrentClose(t *testing.T) {
	testutil.CheckGoroutines(t)
	seeds := vethCloseSeeds
	if testing.Short() {
		seeds = 20
	}
	p := newVethPair(t, Config{MaxOps: 4096, RecvBuffer: 8 << 10, SendBuffer: 8 << 10})
	p.listen(t, 64)
	start := time.Now()
	for seed := range uint64(seeds) {
		closeRace(t, func() (Socket, Socket) { return p.connectPair(t, p.listener) }, p.a, p.b, seed)
		if t.Failed() {
			t.Fatalf("seed %d failed", seed)
		}
	}
	t.Logf("%d seeds in %v", seeds, time.Since(start).Round(time.Millisecond))
}
