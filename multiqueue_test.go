package sdx

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/xdp"
)

// mqQueues is the queue count of each veth end in the multi-queue tests.
const mqQueues = 4

// mqStack opens a stack on h without registering its cleanup: the tests
// close it themselves, to check what Close reports (the frame accounting
// of every queue among it).
func mqStack(t *testing.T, h *testbed.Host, queues []int) *Stack {
	t.Helper()
	s, err := NewStack(Config{
		Netns: h.NS, Interface: h.If, Queues: queues,
		Provider:     provider.Config{Timeout: 5 * time.Second, MaxSockets: 256, Buffers: 4096},
		CloseTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("stack on %s (queues %v): %v", h.NS, queues, err)
	}
	return s
}

// closeStack closes s and fails t on what it reports.
func closeStack(t *testing.T, s *Stack) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Errorf("stack close: %v", err)
	}
}

// noSocketFrames fails t if the steering program of s passed an sdx frame
// to the kernel for want of a socket on its queue.
func noSocketFrames(t *testing.T, s *Stack) {
	t.Helper()
	st, err := s.xl.SteerStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.NoSocket != 0 {
		t.Errorf("steering passed %d sdx frames to the kernel for want of a socket: %+v", st.NoSocket, st)
	}
}

// echoListener listens on b and echoes every connection (echoEvery);
// stop closes the listener and waits for the echoes to end.
func echoListener(t *testing.T, b *Stack) (ln net.Listener, stop func()) {
	t.Helper()
	ln, err := (&ListenConfig{Stack: b}).Listen(context.Background(), "tcp", netip.AddrPortFrom(b.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go echoEvery(ln, &wg)
	return ln, func() {
		ln.Close()
		wg.Wait()
	}
}

// echoEvery accepts on ln and echoes every connection; once ln closes it
// resets the connections still open, so that wg's wait is bounded.
func echoEvery(ln net.Listener, wg *sync.WaitGroup) {
	defer wg.Done()
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.(*Conn).SetLinger(0)
			c.Close()
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		open = append(open, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			testutil.Echo(c)
		}()
	}
}

// exchange sends n seeded bytes over c, reads them back and compares.
func exchange(c net.Conn, seed uint64, n int) error {
	msg := seeded(seed, n)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("%d bytes came back different", n)
	}
	return nil
}

// TestSingleQueueReachesDefaultStack: a stack that serves one queue of a
// 4-queue veth reaches a stack that serves them all, over sdx, whichever
// queue it is: the answers go out on the queue the connection's frames
// came in on.
func TestSingleQueueReachesDefaultStack(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{Queues: mqQueues})
	b := mqStack(t, &bed.B, nil)
	defer closeStack(t, b)
	if n := len(b.LinkStats().Queues); n != mqQueues {
		t.Fatalf("default stack serves %d queues, want %d", n, mqQueues)
	}
	ln, stop := echoListener(t, b)
	defer stop()
	for q := range mqQueues {
		a := mqStack(t, &bed.A, []int{q})
		d := Dialer{Stack: a, ProbeTimeout: testProbe}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Errorf("queue %d: dial: %v", q, err)
			closeStack(t, a)
			continue
		}
		if p := c.(*Conn).Path(); p != PathSDX {
			t.Errorf("queue %d: path %s, want %s", q, p, PathSDX)
		}
		if err := exchange(c, uint64(q), 64<<10); err != nil {
			t.Errorf("queue %d: %v", q, err)
		}
		c.Close()
		ls := a.LinkStats()
		if len(ls.Queues) != 1 || ls.Queues[0].ID != q || ls.Queues[0].RxFrames == 0 {
			t.Errorf("queue %d: the stack reports %+v", q, ls.Queues)
		}
		noSocketFrames(t, a)
		closeStack(t, a)
	}
	noSocketFrames(t, b)
}

// TestConnectionsSpreadOverQueues: 64 connections between two stacks that
// serve every queue of a 4-queue veth all run over sdx, spread over at
// least 3 queues, and move their bytes exactly; every queue's frames are
// accounted for when the stacks close.
func TestConnectionsSpreadOverQueues(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{Queues: mqQueues})
	a, b := mqStack(t, &bed.A, nil), mqStack(t, &bed.B, nil)
	ln, stop := echoListener(t, b)
	exchangeAll(t, a, ln, 64, 16<<10)
	stop()

	for _, s := range []*Stack{a, b} {
		busy := 0
		qs := s.LinkStats().Queues
		for _, q := range qs {
			if q.RxFrames > 0 && q.TxFrames > 0 {
				busy++
			}
			// veth has no zero-copy: every queue asked, was refused, and
			// says so.
			if q.Mode != xdp.ModeCopy || q.ZeroCopyRefused == "" {
				t.Errorf("%v queue %d: mode %v, zero-copy refusal %q; want copy with the refusal", s.Addr(), q.ID, q.Mode, q.ZeroCopyRefused)
			}
		}
		if busy < 3 {
			t.Errorf("%v: %d of %d queues carried frames both ways, want at least 3: %+v", s.Addr(), busy, len(qs), qs)
		}
		// Each queue's UMEM holds a share of the provider's buffers, and
		// a connection's data goes out from its queue's share in place.
		// Copies are for a flow that moved queues after its data was
		// written (no reason for it here) and for a retransmission
		// whose buffer the kernel has not given back yet.
		if ps := s.Provider().Stats(); ps.SentInPlace < ps.DataOut*95/100 {
			t.Errorf("%v: %d of %d data segments sent in place; want all but retransmissions", s.Addr(), ps.SentInPlace, ps.DataOut)
		} else {
			t.Logf("%v: %d of %d data segments sent in place", s.Addr(), ps.SentInPlace, ps.DataOut)
		}
		t.Logf("%v: %+v", s.Addr(), qs)
		noSocketFrames(t, s)
	}
	closeStack(t, a)
	closeStack(t, b)
}
