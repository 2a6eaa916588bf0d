package provider

import (
	"bytes"
	"testing"
	"time"

	"github.com/sdx-project/sdx/provider/memnet"
)

// Tests of what a stream costs in frames: acks coalesced, small writes
// gathered, and neither at the price of a message held for a timer.

// readAll reads what ep has into out.
func readAll(t *testing.T, e *engine, ep *endpoint, out *bytes.Buffer) {
	t.Helper()
	var buf [64 << 10]byte
	for {
		n, err := e.read(ep, buf[:])
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		out.Write(buf[:n])
	}
}

// TestEngineAcksCoalesced: a stream whose segments arrive a few at a time
// (a sender producing 4 KiB every 2 µs) draws about one pure ack per
// ackEvery segments, not one per two, and arrives exact, also under loss,
// duplication and reordering.
func TestEngineAcksCoalesced(t *testing.T) {
	for _, f := range []memnet.Faults{{Delay: 20 * time.Microsecond}, {Delay: 20 * time.Microsecond, Loss: 0.01, Dup: 0.01, Reorder: 0.01}} {
		v := newVNet(t, 7, f, testEngineConfig(), 2)
		ea, eb := v.hosts[0], v.hosts[1]
		a, b := v.pair()
		data := make([]byte, 8<<20)
		seedStream(7).Read(data)
		var got bytes.Buffer
		acks0 := eb.st.acksOut.Load()
		off := 0
		for i := 0; got.Len() < len(data); i++ {
			if i > 10_000_000 {
				t.Fatalf("%+v: %d of %d bytes after %d steps", f, got.Len(), len(data), i)
			}
			if off < len(data) {
				ea.now = v.now
				n, err := ea.write(a, data[off:min(off+4<<10, len(data))])
				if err != nil {
					t.Fatal(err)
				}
				off += n
			}
			v.step()
			eb.now = v.now
			readAll(t, eb, b, &got)
			v.now += int64(2 * time.Microsecond)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("%+v: stream differs", f)
		}
		segs := ea.st.dataOut.Load()
		acks := eb.st.acksOut.Load() - acks0
		t.Logf("%+v: %d segments, %d pure acks", f, segs, acks)
		if f.Loss == 0 && acks*8 > segs {
			t.Errorf("%d pure acks for %d segments: want about one per %d", acks, segs, ackEvery)
		}
		v.run(time.Second, func() bool { return a.snd.sent == 0 })
		checkPool(t, ea)
		checkPool(t, eb)
	}
}

// TestEngineSmallWritesGathered: small writes, each in a poll step of its
// own (as a blocking Send makes them), travel several to a frame while the
// first is unacknowledged, and arrive exact.
func TestEngineSmallWritesGathered(t *testing.T) {
	v := newVNet(t, 3, memnet.Faults{Delay: 10 * time.Microsecond}, testEngineConfig(), 2)
	ea, eb := v.hosts[0], v.hosts[1]
	a, b := v.pair()
	const writes = 2000
	var want, got bytes.Buffer
	out0 := ea.st.dataOut.Load()
	msg := make([]byte, 64)
	for i := range writes {
		msg[0], msg[1] = byte(i), byte(i>>8)
		ea.now = v.now
		if n, err := ea.write(a, msg); n != len(msg) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
		want.Write(msg)
		v.step()
		eb.now = v.now
		readAll(t, eb, b, &got)
		v.now += int64(time.Microsecond) // the sender's next write
	}
	v.run(time.Second, func() bool {
		eb.now = v.now
		readAll(t, eb, b, &got)
		return got.Len() == want.Len()
	})
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("stream differs")
	}
	frames := ea.st.dataOut.Load() - out0
	t.Logf("%d writes of 64 B in %d frames", writes, frames)
	if frames > writes/4 {
		t.Fatalf("%d writes of 64 B took %d frames: not gathered", writes, frames)
	}
	checkPool(t, ea)
	checkPool(t, eb)
}

// TestEngineSmallWritesNotHeld: a lone message goes out in the poll step
// of its write, the second of two in a row too (asking for its ack), and
// a third waits only for that ack, one round trip, never for a timer. A
// ping-pong draws no pure ack: each answer carries it.
func TestEngineSmallWritesNotHeld(t *testing.T) {
	const delay = 10 * time.Microsecond
	v := newVNet(t, 5, memnet.Faults{Delay: delay}, testEngineConfig(), 2)
	ea, eb := v.hosts[0], v.hosts[1]
	a, b := v.pair()
	var got bytes.Buffer
	write := func(e *engine, ep *endpoint, p []byte) {
		t.Helper()
		e.now = v.now
		if n, err := e.write(ep, p); n != len(p) || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	// Ping-pong of 64 B and of 16 KiB: every frame is data.
	for _, size := range []int{64, 16 << 10} {
		acksA, acksB := ea.st.acksOut.Load(), eb.st.acksOut.Load()
		req := make([]byte, size)
		for i := range 110 {
			if i == 10 {
				// 16 KiB is more than the initial congestion window (ten
				// segments): the first exchanges wait for an ack while
				// the window opens. Count from here.
				acksA, acksB = ea.st.acksOut.Load(), eb.st.acksOut.Load()
			}
			req[0] = byte(i)
			out := ea.st.dataOut.Load()
			write(ea, a, req)
			v.step()
			if ea.st.dataOut.Load() == out {
				t.Fatalf("%d B request %d not sent in its write's poll step", size, i)
			}
			got.Reset()
			v.run(time.Second, func() bool { eb.now = v.now; readAll(t, eb, b, &got); return got.Len() == size })
			write(eb, b, got.Bytes())
			got.Reset()
			v.run(time.Second, func() bool { ea.now = v.now; readAll(t, ea, a, &got); return got.Len() == size })
			if !bytes.Equal(got.Bytes(), req) {
				t.Fatalf("%d B answer %d differs", size, i)
			}
		}
		if n := ea.st.acksOut.Load() - acksA + eb.st.acksOut.Load() - acksB; n > 0 {
			t.Errorf("%d B ping-pong: %d pure acks in 100 exchanges, want none", size, n)
		}
	}
	// Three writes in a row.
	v.run(time.Second, func() bool { return a.snd.sent == 0 && b.snd.sent == 0 })
	out := ea.st.dataOut.Load()
	for i := range 2 {
		write(ea, a, []byte{byte(i)})
		v.step()
		if n := ea.st.dataOut.Load() - out; n != uint64(i+1) {
			t.Fatalf("write %d of a row: %d frames sent, want %d", i+1, n, i+1)
		}
	}
	write(ea, a, []byte{2})
	start := v.now
	v.run(time.Second, func() bool { return ea.st.dataOut.Load()-out == 3 })
	if d := time.Duration(v.now - start); d > 3*delay {
		t.Fatalf("third write of a row waited %v, round trip %v", d, 2*delay)
	}
	got.Reset()
	v.run(time.Second, func() bool { eb.now = v.now; readAll(t, eb, b, &got); return got.Len() == 3 })
	if !bytes.Equal(got.Bytes(), []byte{0, 1, 2}) {
		t.Fatalf("got %v", got.Bytes())
	}
	checkPool(t, ea)
	checkPool(t, eb)
}
