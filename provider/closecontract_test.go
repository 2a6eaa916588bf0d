package provider

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/memnet"
)

// Tests of the close contract's finer points (docs/CLOSE.md, points 2
// and 3): what a closed descriptor answers, Duplicate racing the last
// close, and which close cancels the operations posted through a
// descriptor.

// A closed (or never issued) descriptor fails with ENOTSOCK before any
// argument is looked at: the descriptor is the first argument checked.
func TestCloseNotSockBeforeArguments(t *testing.T) {
	tn := newTestNet(t, 31, memnet.Faults{}, 2, nil)
	p := tn.ps[0]
	old := must[Socket](t)(p.Socket())
	if err := p.CloseSocket(old); err != nil {
		t.Fatal(err)
	}
	cq := newCQ(t, p, 8)
	foreign := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 9, 9}), 80) // not the link's; nothing is sent
	for _, s := range []Socket{old, 0, Socket(1<<32 | 9999)} {
		uses := map[string]func() error{
			"Bind foreign address":     func() error { return p.Bind(s, foreign) },
			"Recv empty buffer":        func() error { _, err := p.Recv(s, nil); return err },
			"PostRecv empty buffer":    func() error { return p.PostRecv(s, nil, cq, 0) },
			"PostSend nil queue":       func() error { return p.PostSend(s, []byte("x"), nil, 0) },
			"PostRecv nil queue":       func() error { return p.PostRecv(s, make([]byte, 1), nil, 0) },
			"PostAccept nil queue":     func() error { return p.PostAccept(s, nil, 0) },
			"PostConnect nil queue":    func() error { return p.PostConnect(s, tn.addr(1, 80), nil, 0) },
			"EventSelect nil function": func() error { return p.EventSelect(s, FDRead, nil) },
		}
		for name, use := range uses {
			if err := use(); !errors.Is(err, ErrNotSock) {
				t.Errorf("%s on %v: %v, want ENOTSOCK", name, s, err)
			}
		}
	}
	// On a live descriptor the same arguments are still refused.
	live := must[Socket](t)(p.Socket())
	checks := map[string]struct {
		err  error
		want error
	}{
		"Bind foreign address":     {p.Bind(live, foreign), ErrAddrNotAvail},
		"Recv empty buffer":        {second(p.Recv(live, nil)), ErrInvalid},
		"PostRecv empty buffer":    {p.PostRecv(live, nil, cq, 0), ErrInvalid},
		"PostSend nil queue":       {p.PostSend(live, []byte("x"), nil, 0), ErrInvalid},
		"EventSelect nil function": {p.EventSelect(live, FDRead, nil), ErrInvalid},
	}
	for name, c := range checks {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s on a live descriptor: %v, want %v", name, c.err, c.want)
		}
	}
	if st := p.Stats(); st.OpsInUse != 0 {
		t.Errorf("%d ops in use after refused verbs", st.OpsInUse)
	}
}

// Duplicate racing the last CloseSocket: exactly one wins. Either the
// duplicate is made first (Duplicate returns a descriptor, the close is
// not the last and releases nothing), or the close is (it is the last
// close: the pending accept is aborted and the port free before it
// returns, and Duplicate fails with ENOTSOCK). Never a close that returns
// with the socket still alive and no descriptor left to close it.
func TestCloseDuplicateRacesLastClose(t *testing.T) {
	tn := newTestNet(t, 32, memnet.Faults{}, 1, nil)
	p := tn.ps[0]
	port := netip.AddrPortFrom(netip.IPv4Unspecified(), 80)
	cq := newCQ(t, p, 8)
	got := make([]Completion, 8)
	dupWon, closeWon := 0, 0
	wk := newDupWorker(p)
	defer wk.stop()
	rng := rand.New(rand.NewPCG(32, 0))
	// The race the issue measured showed in about 1 round of 200.
	for round := range scaled(3000, 1000) {
		l := must[Socket](t)(p.Socket())
		if err := p.Bind(l, port); err != nil {
			t.Fatalf("round %d: bind: %v", round, err)
		}
		if err := p.Listen(l, 4); err != nil {
			t.Fatal(err)
		}
		if err := p.PostAccept(l, cq, uint64(round)); err != nil {
			t.Fatal(err)
		}
		other := must[Socket](t)(p.Socket())
		// The worker spins on its own CPU waiting for the round; both
		// sides start together, each after its own seeded delay.
		dupDelay, closeDelay := rng.IntN(2000), rng.IntN(2000)
		wk.l.Store(uint64(l))
		wk.delay.Store(int64(dupDelay))
		wk.round.Store(int64(round + 1))
		for i := 0; wk.started.Load() != int64(round+1); i++ {
			if i%1000 == 999 {
				runtime.Gosched()
			}
		}
		spin(closeDelay)
		closeErr := p.CloseSocket(l)
		// What holds the instant the close returned.
		nAtClose := cq.Poll(got)
		bindAtClose := p.Bind(other, port)
		dr := <-wk.res
		if closeErr != nil {
			t.Fatalf("round %d: close: %v", round, closeErr)
		}
		switch {
		case dr.err == nil:
			dupWon++
			// The duplicate came first: the socket lives on through it.
			if !errors.Is(bindAtClose, ErrAddrInUse) {
				t.Fatalf("round %d: duplicate won, yet binding its port after the close gave %v", round, bindAtClose)
			}
			if nAtClose != 0 {
				t.Fatalf("round %d: duplicate won, yet the close completed %+v", round, got[:nAtClose])
			}
			if err := p.CloseSocket(dr.d); err != nil {
				t.Fatal(err)
			}
			nAtClose += cq.Poll(got[nAtClose:])
			if err := p.Bind(other, port); err != nil {
				t.Fatalf("round %d: bind after the duplicate's close: %v", round, err)
			}
		case errors.Is(dr.err, ErrNotSock):
			closeWon++
			// The close came first and was the last: a hard close,
			// finished when it returned.
			if bindAtClose != nil {
				t.Fatalf("round %d: close won, yet binding its port right after gave %v", round, bindAtClose)
			}
		default:
			t.Fatalf("round %d: duplicate: %v", round, dr.err)
		}
		if nAtClose != 1 || got[0].Context != uint64(round) || !errors.Is(got[0].Err, ErrAborted) {
			t.Fatalf("round %d: %d completions when the last close returned (%+v), want the accept aborted", round, nAtClose, got[:nAtClose])
		}
		if err := p.CloseSocket(other); err != nil {
			t.Fatal(err)
		}
		if st := p.Stats(); st.Sockets != 0 || st.OpsInUse != 0 {
			t.Fatalf("round %d: %d sockets, %d ops left", round, st.Sockets, st.OpsInUse)
		}
	}
	t.Logf("%d rounds: the duplicate won %d, the close %d", dupWon+closeWon, dupWon, closeWon)
}

// spinSink keeps spin's loop from being optimised away.
var spinSink atomic.Uint64

// spin burns about n short steps of CPU without yielding: a delay far
// finer than time.Sleep, to vary which of two racing goroutines is ahead.
func spin(n int) {
	x := uint64(n)
	for i := range n {
		x = x*6364136223846793005 + uint64(i)
	}
	spinSink.Store(x)
}

type dupResult struct {
	d   Socket
	err error
}

// dupWorker is a goroutine that spins waiting for a round number, then
// duplicates the descriptor it was given: a racer already running on its
// own CPU, where a goroutine started per round would often wait for the
// starter's CPU and so always come second.
type dupWorker struct {
	round, started, delay atomic.Int64
	l                     atomic.Uint64
	res                   chan dupResult
	done                  chan struct{}
}

func newDupWorker(p *Provider) *dupWorker {
	w := &dupWorker{res: make(chan dupResult, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		seen := int64(0)
		for i := 0; ; i++ {
			r := w.round.Load()
			if r < 0 {
				return
			}
			if r == seen {
				if i%1000 == 999 {
					runtime.Gosched() // a loaded machine may need this CPU
				}
				continue
			}
			seen = r
			w.started.Store(r)
			spin(int(w.delay.Load()))
			d, err := p.Duplicate(Socket(w.l.Load()))
			w.res <- dupResult{d, err}
		}
	}()
	return w
}

func (w *dupWorker) stop() { w.round.Store(-1); <-w.done }

// The rule for operations posted through a descriptor that is closed
// while another descriptor of the socket lives: they belong to the
// socket, not to the descriptor, so a close that is not the last cancels
// nothing; they complete as usual (their completion names the descriptor
// they were posted on), or with ErrAborted when the last descriptor is
// closed. That holds whether or not the poller had taken the operation up
// before the close (a synchronous call between post and close makes sure
// it had).
func TestCloseNotLastKeepsOperations(t *testing.T) {
	tn := newTestNet(t, 33, memnet.Faults{}, 2, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	l := tn.listener(1, 80, 4)
	cq := newCQ(t, p1, 8)
	got := make([]Completion, 8)
	// settled makes sure the poller has carried out everything submitted
	// before it, then reports the completions queued by then.
	settled := func(s Socket) int {
		if _, err := p1.GetSockName(s); err != nil {
			t.Fatal(err)
		}
		return cq.Poll(got)
	}
	// closeNotLast closes s, whose duplicate dup lives on, after the
	// poller has caught up if syncBetween, and checks that nothing
	// completed.
	closeNotLast := func(round int, syncBetween bool, s, dup Socket) {
		if syncBetween {
			settled(s)
		}
		if err := p1.CloseSocket(s); err != nil {
			t.Fatal(err)
		}
		if n := settled(dup); n != 0 {
			t.Fatalf("round %d (sync between: %v): a close that was not the last completed %+v", round, syncBetween, got[:n])
		}
	}
	rounds := 100
	if raceOn {
		rounds = 40
	}
	for round := range rounds {
		syncBetween := round%2 == 1
		// An accept posted on l, then l closed while d lives.
		d := must[Socket](t)(p1.Duplicate(l))
		if err := p1.PostAccept(l, cq, 1); err != nil {
			t.Fatal(err)
		}
		closeNotLast(round, syncBetween, l, d)
		a := must[Socket](t)(p0.Socket())
		if err := p0.Connect(a, tn.addr(1, 80)); err != nil {
			t.Fatal(err)
		}
		if n, err := cq.Wait(got, 5*time.Second); n != 1 || err != nil || got[0].Err != nil || got[0].Socket != l || got[0].Accepted == 0 {
			t.Fatalf("round %d: accept posted on the closed duplicate: %d %v %+v", round, n, err, got[0])
		}
		b := got[0].Accepted
		l = d

		// A receive posted on b, then b closed while its duplicate lives.
		bd := must[Socket](t)(p1.Duplicate(b))
		buf := make([]byte, 16)
		if err := p1.PostRecv(b, buf, cq, 2); err != nil {
			t.Fatal(err)
		}
		closeNotLast(round, syncBetween, b, bd)
		if _, err := p0.Send(a, []byte("kept")); err != nil {
			t.Fatal(err)
		}
		if n, err := cq.Wait(got, 5*time.Second); n != 1 || err != nil || got[0].Err != nil || got[0].Socket != b || string(buf[:got[0].Bytes]) != "kept" {
			t.Fatalf("round %d: receive posted on the closed duplicate: %d %v %+v", round, n, err, got[0])
		}
		// The last close cancels what is pending, whichever descriptor
		// it was posted on.
		if err := p1.PostRecv(bd, buf, cq, 3); err != nil {
			t.Fatal(err)
		}
		if err := p1.CloseSocket(bd); err != nil {
			t.Fatal(err)
		}
		if n := cq.Poll(got); n != 1 || !errors.Is(got[0].Err, ErrAborted) {
			t.Fatalf("round %d: the last close left %d completions %+v", round, n, got[:n])
		}
		p0.CloseSocket(a)
	}
	if err := p1.PostAccept(l, cq, 4); err != nil {
		t.Fatal(err)
	}
	if err := p1.CloseSocket(l); err != nil {
		t.Fatal(err)
	}
	if n := cq.Poll(got); n != 1 || !errors.Is(got[0].Err, ErrAborted) {
		t.Fatalf("the listener's last close left %d completions %+v", n, got[:n])
	}
	if st := p1.Stats(); st.Sockets != 0 || st.OpsInUse != 0 || st.BuffersHeld() != 0 {
		t.Fatalf("left behind: %d sockets, %d ops, %d buffers", st.Sockets, st.OpsInUse, st.BuffersHeld())
	}
}

// A hard close that races data flowing into posted receives: a receive
// that completes with ErrAborted took nothing (its buffer is as it was
// posted), and the receives that completed before it carry the stream's
// start, in order. Data already handed into a receive's buffer completes
// it with its bytes, not with ErrAborted: the close discards what is
// queued, never what was handed over. Half the rounds close through a
// duplicate, so the last close is not the descriptor the receives were
// posted on.
func TestCloseAbortedRecvTookNothing(t *testing.T) {
	testutil.CheckGoroutines(t)
	// The receiver's dedicated poller spins, so a close is usually
	// applied by it, after input it took while the close was on its way.
	host := 0
	tn := newTestNet(t, 34, memnet.Faults{}, 2, func(c *Config) {
		if host == 1 {
			c.Mode = PollBusy
		}
		host++
	})
	p0, p1 := tn.ps[0], tn.ps[1]
	l := tn.listener(1, 80, 4)
	const posted, sentinel = 4, 0xAA
	cq := newCQ(t, p1, 2*posted)
	got := make([]Completion, 2*posted)
	rng := rand.New(rand.NewPCG(34, 0))
	// The stream's bytes never equal the sentinel, so a buffer that took
	// any of them differs from it.
	data := make([]byte, 16<<10)
	for i := range data {
		data[i] = byte(rng.IntN(0x80))
	}
	handedOver := 0
	for round := range scaled(4000, 2000) {
		a, b := tn.conn(l, 80)
		on := b // the descriptor receives are posted on
		bufs := make([][]byte, posted)
		post := func(k int) {
			buf := bufs[k][:1+rng.IntN(cap(bufs[k]))]
			for i := range buf {
				buf[i] = sentinel
			}
			bufs[k] = buf
			if err := p1.PostRecv(on, buf, cq, uint64(k)); err != nil {
				t.Fatalf("round %d: post: %v", round, err)
			}
		}
		for k := range bufs {
			bufs[k] = make([]byte, 3000)
			post(k)
		}
		sent := make(chan error, 1)
		go func() {
			// Small sends with pauses: the receives wait for data, so it
			// goes straight into their buffers.
			for off := 0; off < len(data); {
				n := min(1+int(uint(off*7919)%1400), len(data)-off)
				if _, err := p0.Send(a, data[off:off+n]); err != nil {
					sent <- err
					return
				}
				off += n
				spin(2000)
			}
			sent <- nil
		}()
		if round%2 == 1 {
			on = must[Socket](t)(p1.Duplicate(b))
			if err := p1.CloseSocket(b); err != nil {
				t.Fatal(err)
			}
		}
		// Reap and repost until the seeded moment of the close.
		off, closeAt := 0, rng.IntN(len(data)/2)
		pending := posted
		check := func(c Completion) {
			buf := bufs[c.Context]
			switch {
			case c.Err == nil:
				if c.Bytes == 0 || off+c.Bytes > len(data) || string(buf[:c.Bytes]) != string(data[off:off+c.Bytes]) {
					t.Fatalf("round %d: receive of %d bytes at stream offset %d holds the wrong bytes", round, c.Bytes, off)
				}
				off += c.Bytes
			case errors.Is(c.Err, ErrAborted):
				if c.Bytes != 0 {
					t.Fatalf("round %d: an aborted receive reports %d bytes", round, c.Bytes)
				}
				for i, x := range buf {
					if x != sentinel {
						t.Fatalf("round %d: an aborted receive of %d bytes had taken stream data (byte %d changed)", round, len(buf), i)
					}
				}
			default:
				t.Fatalf("round %d: receive failed with %v", round, c.Err)
			}
		}
		for off < closeAt {
			n, err := cq.Wait(got, 5*time.Second)
			if err != nil || n == 0 {
				t.Fatalf("round %d: no completion at offset %d: %v", round, off, err)
			}
			for _, c := range got[:n] {
				check(c)
				post(int(c.Context))
			}
		}
		spin(rng.IntN(3000))
		if err := p1.CloseSocket(on); err != nil {
			t.Fatal(err)
		}
		// Everything pending completed before CloseSocket returned.
		n := cq.Poll(got)
		if n != pending {
			t.Fatalf("round %d: %d completions after the close, want %d", round, n, pending)
		}
		for _, c := range got[:n] {
			if c.Err == nil {
				handedOver++
			}
			check(c)
		}
		if err := <-sent; err != nil && !errors.Is(err, ErrConnReset) {
			t.Fatalf("round %d: the sender saw %v", round, err)
		}
		p0.CloseSocket(a)
	}
	t.Logf("%d receives completed with data in the poll after the close; %d bytes went straight into receives", handedOver, p1.Stats().RecvDirect)
	if st := p1.Stats(); st.Sockets != 1 || st.OpsInUse != 0 || st.BuffersHeld() != 0 {
		t.Fatalf("left behind: %d sockets, %d ops, %d buffers", st.Sockets, st.OpsInUse, st.BuffersHeld())
	}
}

// The race of TestCloseAbortedRecvTookNothing, ordered by hand: a receive
// waits with its buffer lent to the engine, CloseSocket begins (closure
// has begun: nothing is notified from here on), and data arrives before
// the poller applies the close. The data went into the receive's buffer,
// so the receive completes with it, before CloseSocket returns.
func TestCloseKeepsDataHandedOver(t *testing.T) {
	tn, _, a, b := connNet(t, 35, memnet.Faults{}, 2, 4, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	cq := newCQ(t, p1, 4)
	got := make([]Completion, 4)
	first, second := make([]byte, 16), make([]byte, 16)
	if err := p1.PostRecv(b, first, cq, 1); err != nil {
		t.Fatal(err)
	}
	if err := p1.PostRecv(b, second, cq, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := p1.GetSockName(b); err != nil { // both receives are taken up
		t.Fatal(err)
	}
	sock := p1.liveSock(b)
	release := holdPoller(t, p1)
	closed := make(chan error, 1)
	go func() { closed <- p1.CloseSocket(b) }()
	for !sock.closing.Load() {
		runtime.Gosched()
	}
	if _, err := p0.Send(a, []byte("handed over")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p1.Stats().RecvDirect == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the data never reached the waiting receive")
		}
		// Input only: the close waits in the submission ring.
		now := p1.nanotime()
		p1.eng.now = now
		p1.eng.receive(now)
		p1.settle()
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	n := cq.Poll(got)
	if n != 2 {
		t.Fatalf("%d completions after the close, want 2: %+v", n, got[:n])
	}
	for _, c := range got[:n] {
		switch c.Context {
		case 1:
			if c.Err != nil || string(first[:c.Bytes]) != "handed over" {
				t.Errorf("the receive that took the data: %d bytes %q, %v; want its bytes and success", c.Bytes, first[:c.Bytes], c.Err)
			}
		case 2:
			if !errors.Is(c.Err, ErrAborted) || c.Bytes != 0 || string(second) != string(make([]byte, 16)) {
				t.Errorf("the receive behind it: %d bytes, %v, buffer %q; want ErrAborted and nothing taken", c.Bytes, c.Err, second)
			}
		}
	}
	p0.CloseSocket(a)
}
