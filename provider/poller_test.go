package provider

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/memnet"
)

// The role alone: a wanter parks, and the holder's hand-off wakes it
// holding the role, the newest wanter first; the role is never free in
// between, and a wanter that leaves first is taken off the list.
func TestPollerHandOff(t *testing.T) {
	var pl poller
	pl.init()
	if !pl.tryTake() {
		t.Fatal("a free role was not taken")
	}
	const n = 3
	var wg sync.WaitGroup
	order := make(chan int, n)
	ws := make([]*roleWait, n)
	for i := range ws {
		ws[i] = &roleWait{ch: make(chan struct{}, 1)}
	}
	for i, w := range ws {
		if pl.register(w, 0) {
			t.Fatal("registered while the role was held, and took it")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !wokenWithRole(t, &pl, w, fmt.Sprintf("wanter %d", i)) {
				return
			}
			if !pl.held.Load() {
				t.Errorf("wanter %d was handed a free role", i)
			}
			order <- i
			pl.release() // to the next wanter
		}()
	}
	if got := pl.want.Load(); got != n {
		t.Fatalf("%d wanters registered, want %d", got, n)
	}
	pl.release()
	wg.Wait()
	close(order)
	next := 0
	for i := range order {
		if i != n-1-next {
			t.Fatalf("wanter %d got the role in turn %d: the hand-off goes to the newest wanter first", i, next)
		}
		next++
	}
	if pl.held.Load() || pl.want.Load() != 0 {
		t.Fatalf("after the last release: held %v, %d wanters", pl.held.Load(), pl.want.Load())
	}
	if h := pl.stats().Handoffs; h != n {
		t.Fatalf("%d hand-offs, want %d", h, n)
	}

	// A wanter whose wait ends first leaves the list; the next release
	// frees the role.
	pl.tryTake()
	w := &roleWait{ch: make(chan struct{}, 1)}
	pl.register(w, 0)
	if pl.unregister(w) {
		t.Fatal("a wanter that left was handed the role")
	}
	pl.release()
	if pl.held.Load() {
		t.Fatal("the role stayed held with nobody wanting it")
	}
}

// release racing register: however they interleave, the wanter ends up
// holding the role, woken if it had to wait; nobody is left registered
// with the role free.
func TestPollerReleaseRacesRegister(t *testing.T) {
	var pl poller
	pl.init()
	rounds := 100000
	if raceOn {
		rounds = 20000
	}
	for round := range rounds {
		pl.tryTake()
		w := &roleWait{ch: make(chan struct{}, 1)}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if pl.register(w, 0) {
				return
			}
			wokenWithRole(t, &pl, w, fmt.Sprintf("round %d: the wanter", round))
		}()
		spin(round % 500)
		pl.release()
		<-done
		if t.Failed() {
			return
		}
		if !pl.held.Load() || pl.want.Load() != 0 {
			t.Fatalf("round %d: held %v with %d wanters, want the wanter holding it", round, pl.held.Load(), pl.want.Load())
		}
		pl.release()
	}
}

// In PollPark nobody spins, and a goroutine that waits for the role is
// woken by the hand-off, not by a timer: with the test holding the role,
// a Recv parks as a wanter; once the test lets go, the Recv holds the
// role and takes data that arrives later. A full submission ring blocks
// its submitters until the holder drains it, and wakes them then.
func TestPollerParkModeHandsOff(t *testing.T) {
	tn, _, a, b := connNet(t, 36, memnet.Faults{}, 2, 4, func(c *Config) {
		c.Mode = PollPark
		c.SubmitQueue = 2
	})
	p0, p1 := tn.ps[0], tn.ps[1]
	before := p1.Stats().Poller

	var once sync.Once
	hold := holdPoller(t, p1)
	release := func() { once.Do(hold) }
	defer release()
	got := make(chan error, 1)
	buf := make([]byte, 8)
	go func() {
		n, err := p1.Recv(b, buf)
		if err == nil && string(buf[:n]) != "late" {
			t.Errorf("received %q", buf[:n])
		}
		got <- err
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s", what)
			}
		}
	}
	waitFor("wanter", func() bool { return p1.role.want.Load() == 1 })
	// Posts while the test holds the role fill the two-slot ring (the
	// Recv took one); the rest wait for room.
	cq := newCQ(t, p1, 16)
	posted := make(chan error, 6)
	for range 6 {
		go func() { posted <- p1.PostSend(b, []byte("x"), cq, 0) }()
	}
	waitFor("blocked submitter", func() bool { return p1.role.subWaiting.Load() > 0 })
	release()
	for range 6 {
		if err := <-posted; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p0.Send(a, []byte("late")); err != nil {
		t.Fatal(err)
	}
	testutil.NoErrWithin(t, got, 10*time.Second, "the Recv that waited for the role")
	done := make([]Completion, 16)
	for n := 0; n < 6; {
		k, err := cq.Wait(done, 5*time.Second)
		if err != nil || k == 0 {
			t.Fatalf("posted sends: %d completed, %v", n, err)
		}
		n += k
	}
	after := p1.Stats().Poller
	if after.Yields != before.Yields {
		t.Errorf("%d yields in PollPark: a goroutine spun", after.Yields-before.Yields)
	}
	if after.Handoffs == before.Handoffs {
		t.Error("the role was never handed over")
	}
	if y := p0.Stats().Poller.Yields; y != 0 {
		t.Errorf("%d yields in PollPark on the sender", y)
	}
}

// wokenWithRole waits for w's wake-up and checks that it came with the
// role; what names w in a failure.
func wokenWithRole(t *testing.T, pl *poller, w *roleWait, what string) bool {
	select {
	case <-w.ch:
	case <-time.After(10 * time.Second):
		t.Errorf("%s was never woken", what)
		return false
	}
	if !pl.unregister(w) {
		t.Errorf("%s woken without the role", what)
		return false
	}
	return true
}
