package bench

import (
	"strings"
	"testing"
	"time"
)

// TestChildAnswer: the child's requests, as the parent sends them, and
// what it answers to bad ones.
func TestChildAnswer(t *testing.T) {
	k := newSink()
	k.add(100) // before the reset: not counted
	if got := answer("reset 4096", k, true); got != "ok" || !k.on.Load() || k.size.Load() != 4096 {
		t.Fatalf("reset: %q, on %v, size %d", got, k.on.Load(), k.size.Load())
	}
	k.add(64)
	k.add(36)
	k.end()
	got := answer("drain 1 1000", k, true)
	f := strings.Fields(got)
	if len(f) != 5 || f[0] != "sunk" || f[1] != "100" || f[2] != "2" || f[3] != "1" {
		t.Errorf("drain: %q, want sunk 100 2 1 AGO", got)
	}
	if k.on.Load() {
		t.Error("the sink still on after a drain")
	}
	// A stream drain that does not see its connections end says so.
	answer("reset 65536", k, true)
	start := time.Now()
	if got := answer("drain 2 30", k, true); !strings.HasPrefix(got, "error 0 of 2") {
		t.Errorf("drain of connections that never end: %q", got)
	}
	if el := time.Since(start); el < 30*time.Millisecond || el > time.Second {
		t.Errorf("drain waited %v for 30 ms", el)
	}
	// A datagram drain ends once nothing came for floorQuiet.
	answer("reset 65536", k, false)
	k.add(10)
	start = time.Now()
	if got := answer("drain 5 5000", k, false); !strings.HasPrefix(got, "sunk 10 1 0 ") {
		t.Errorf("datagram drain: %q", got)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("datagram drain waited %v with nothing arriving", el)
	}
	for _, bad := range []string{"", "reset", "reset 0", "reset x", "drain 1", "drain -1 5", "drain 1 9999999", "stop"} {
		if got := answer(bad, k, true); !strings.HasPrefix(got, "error ") {
			t.Errorf("%q: answered %q", bad, got)
		}
	}
}
