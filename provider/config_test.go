package provider

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/provider/memnet"
)

// Absurd values give an error that names the field, at Startup: never an
// allocation that kills the process, and never timers that overflow and
// spin (issue 13, item 7).
func TestStartupAbsurdValues(t *testing.T) {
	l, _ := memnet.New(1).NewLink()
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"Timeout never", Config{Timeout: math.MaxInt64}, "Config.Timeout"},
		{"Timeout a year", Config{Timeout: 365 * 24 * time.Hour}, "Config.Timeout"},
		{"MaxRTO huge", Config{MaxRTO: math.MaxInt64 / 2, Timeout: math.MaxInt64}, "Config.MaxRTO"},
		{"MaxRTO an hour", Config{MaxRTO: time.Hour, Timeout: 3 * time.Hour}, "Config.MaxRTO"},
		{"MaxOps 1<<30", Config{MaxOps: 1 << 30}, "Config.MaxOps"},
		{"Buffers 1<<31", Config{Buffers: 1 << 31}, "Config.Buffers"},
		{"Buffers past 4 GiB", Config{Buffers: MaxBufferPool/l.MTU() + 1}, "Config.Buffers"},
		{"Spin an hour", Config{Spin: time.Hour}, "Config.Spin"},
		{"MaxBacklog 1<<30", Config{MaxBacklog: 1 << 30}, "Config.MaxBacklog"},
		{"RecvBuffer 1<<40", Config{RecvBuffer: 1 << 40}, "RecvBuffer"},
		{"PeerTimeout never", Config{PeerTimeout: math.MaxInt64}, "Config.PeerTimeout"},
		{"PeerTimeout 1ms", Config{PeerTimeout: time.Millisecond}, "Config.PeerTimeout"},
	}
	for _, c := range cases {
		c.cfg.Link = l
		p, err := Startup(c.cfg)
		if err == nil {
			p.Cleanup()
			t.Errorf("%s: Startup accepted it", c.name)
			continue
		}
		if !errors.Is(err, ErrConfig) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s: %v, want an ErrConfig naming %q", c.name, err, c.want)
		}
	}
	// The bounds themselves are accepted.
	s := [32]byte{7}
	p, err := Startup(Config{Link: l, Seed: &s, Timeout: MaxTimeout, MaxRTO: MaxMaxRTO, Spin: MaxSpin, MaxOps: 4096, Buffers: 4096})
	if err != nil {
		t.Fatalf("the largest Timeout, MaxRTO and Spin: %v", err)
	}
	p.Cleanup()
}

// The engine's timer arithmetic saturates: with a dead-peer bound and an
// RTO ceiling past the end of the clock (values validation refuses; the
// engine is the backstop), an idle connection's next timer is in the
// future, not overflowed into the past, so the timers do not spin.
func TestEngineTimersSaturate(t *testing.T) {
	cfg := testEngineConfig()
	cfg.Timeout = math.MaxInt64
	cfg.MaxRTO = math.MaxInt64
	cfg.PeerTimeout = 0 // heartbeats keep timers of their own, well inside the hour
	v := newVNet(t, 13, memnet.Faults{}, cfg, 2)
	a, b := v.pair()
	a.err, b.err = nil, nil
	v.now += int64(3 * time.Second) // idle well past the old Timeout/3
	for range 10 {
		v.step()
	}
	for i, e := range v.hosts {
		// A wrapped deadline is in the past, and schedule turns that
		// into "the next nanosecond", for ever.
		if tm, ok := e.nextTimer(); ok && tm < v.now+int64(time.Hour) {
			t.Fatalf("host %d: next timer in %v on an idle connection whose bounds are past the end of time: a deadline wrapped", i, time.Duration(tm-v.now))
		}
	}
	if a.state != stateEstablished || b.state != stateEstablished {
		t.Fatalf("states %v %v", a.state, b.state)
	}
}

// CompletionQueue.Wait with the largest timeout waits (for ever), where
// an overflowed deadline would return at once.
func TestWaitLongestTimeout(t *testing.T) {
	tn := newTestNet(t, 34, memnet.Faults{}, 2, nil)
	p := tn.ps[0]
	cq := newCQ(t, p, 8)
	type res struct {
		n   int
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := cq.Wait(make([]Completion, 1), time.Duration(math.MaxInt64))
		done <- res{n, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Wait(MaxInt64) on an empty queue returned at once: %d %v", r.n, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	s := must[Socket](t)(p.Socket())
	if err := p.PostConnect(s, tn.addr(1, 99), cq, 1); err != nil { // no listener: refused
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.n != 1 || r.err != nil {
			t.Fatalf("Wait: %d %v", r.n, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after a completion")
	}
}

// MaxSockets past what connection ids can name is refused with a message
// about MaxSockets, the field the caller set; below that bound, the
// default MaxConnections follows it without going past its own limit.
func TestStartupMaxSocketsNamesItself(t *testing.T) {
	n := memnet.New(1)
	l, _ := n.NewLink()
	_, err := Startup(Config{Link: l, MaxSockets: maxConns + 1})
	if !errors.Is(err, ErrConfig) || !strings.HasPrefix(strings.TrimPrefix(err.Error(), ErrConfig.Error()+": "), "Config.MaxSockets") {
		t.Fatalf("MaxSockets %d: %v, want an error about Config.MaxSockets", maxConns+1, err)
	}
	s := [32]byte{8}
	p, err := Startup(Config{Link: l, Seed: &s, MaxSockets: 600000})
	if err != nil {
		t.Fatalf("MaxSockets 600000 (default MaxConnections past its limit before): %v", err)
	}
	p.Cleanup()
}
