package xdplink

import (
	"errors"
	"testing"
)

// A capture keeps at most its slots' worth of frames, cut to its
// snaplen, counts what it had no room for, and records nothing once
// stopped; one capture runs on a link at a time.
func TestCaptureRing(t *testing.T) {
	l := &Link{}
	c, err := l.StartCapture(2, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartCapture(0, 0); !errors.Is(err, ErrCaptureBusy) {
		t.Fatalf("second capture: %v, want ErrCaptureBusy", err)
	}
	for i := range 3 {
		l.tap.Load().record(i == 0, []byte("0123"), []byte("456789"))
	}
	if c.Captured() != 2 || c.Dropped() != 1 {
		t.Fatalf("captured %d, dropped %d; want 2 and 1", c.Captured(), c.Dropped())
	}
	f, ok := c.Next()
	if !ok || string(f.Data) != "01234567" || f.Len != 10 || !f.Sent {
		t.Fatalf("first frame %+v %q", f, f.Data)
	}
	if f, ok = c.Next(); !ok || f.Sent {
		t.Fatalf("second frame %+v", f)
	}
	if _, ok = c.Next(); ok {
		t.Fatal("a third frame")
	}
	// Released slots take frames again.
	l.tap.Load().record(false, []byte("x"))
	if f, ok = c.Next(); !ok || string(f.Data) != "x" {
		t.Fatalf("after release: %+v", f)
	}
	c.Stop()
	if l.tap.Load() != nil {
		t.Fatal("still tapped after Stop")
	}
	if running, _, _ := l.CaptureState(); running {
		t.Fatal("CaptureState reports a capture after Stop")
	}
	if _, err := l.StartCapture(0, 0); err != nil {
		t.Fatalf("capture after Stop: %v", err)
	}
	// Recording allocates nothing.
	c2 := l.tap.Load()
	if n := testing.AllocsPerRun(100, func() {
		c2.record(true, []byte("abc"))
		c2.Next()
	}); n != 0 {
		t.Errorf("record and Next: %v allocations", n)
	}
}
