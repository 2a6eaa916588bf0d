package provider

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/provider/memnet"
)

// Seeded streams: every test stream of this package is the output of
// seedStream, so a writer and a checker made from the same seed agree on
// every byte and the expected data is regenerated, never stored.

// seedStream returns the generator of seed's stream.
func seedStream(seed uint64) *rand.ChaCha8 {
	return rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 's'})
}

// streamCheck checks received bytes, in order, against seed's stream.
type streamCheck struct {
	want *rand.ChaCha8
	buf  []byte
	n    int64 // bytes checked so far
}

func newStreamCheck(seed uint64) *streamCheck {
	return &streamCheck{want: seedStream(seed)}
}

// check compares b with the stream's next len(b) bytes.
func (c *streamCheck) check(b []byte) error {
	if len(c.buf) < len(b) {
		c.buf = make([]byte, len(b))
	}
	w := c.buf[:len(b)]
	c.want.Read(w)
	if !bytes.Equal(b, w) {
		i := 0
		for b[i] == w[i] {
			i++
		}
		return fmt.Errorf("byte %d of the stream differs", c.n+int64(i))
	}
	c.n += int64(len(b))
	return nil
}

// sendSeeded writes n bytes of seed's stream to w in chunks of up to
// chunk bytes; w must take each chunk whole.
func sendSeeded(w func([]byte) (int, error), seed uint64, n int64, chunk int) error {
	src := seedStream(seed)
	buf := make([]byte, chunk)
	for n > 0 {
		m := int(min(int64(chunk), n))
		src.Read(buf[:m])
		k, err := w(buf[:m])
		if err != nil {
			return err
		}
		if k != m {
			return fmt.Errorf("short write: %d of %d bytes", k, m)
		}
		n -= int64(m)
	}
	return nil
}

// recvSeeded reads from r until end of stream, checking every byte
// against seed's stream, and returns how many it read.
func recvSeeded(r func([]byte) (int, error), seed uint64, chunk int) (int64, error) {
	c := newStreamCheck(seed)
	buf := make([]byte, chunk)
	for {
		n, err := r(buf)
		if err != nil {
			return c.n, err
		}
		if n == 0 {
			return c.n, nil
		}
		if err := c.check(buf[:n]); err != nil {
			return c.n, err
		}
	}
}

// echoUntilEOF is the echo server of the blocking tests: it sends back
// everything it receives on s, up to chunk bytes a call, then ends its
// own stream when the peer ends its.
func echoUntilEOF(p *Provider, s Socket, chunk int) error {
	buf := make([]byte, chunk)
	for {
		n, err := p.Recv(s, buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return p.Shutdown(s)
		}
		if _, err := p.Send(s, buf[:n]); err != nil {
			return err
		}
	}
}

// connNet makes a testNet of n hosts and connects host 0 to a listener
// on host 1's port 80 with backlog: the listener and both ends.
func connNet(t testing.TB, seed uint64, f memnet.Faults, n, backlog int, tweak func(*Config)) (tn *testNet, l, a, b Socket) {
	t.Helper()
	tn = newTestNet(t, seed, f, n, tweak)
	l = tn.listener(1, 80, backlog)
	a, b = tn.conn(l, 80)
	return tn, l, a, b
}

// echoNet connects host 0 of a two-host testNet in mode to an echo server
// on host 1. It returns host 0's provider and end; wait returns when the
// server has ended, after the caller closed its end.
func echoNet(t testing.TB, seed uint64, mode PollMode) (p *Provider, a Socket, wait func()) {
	t.Helper()
	tn, _, a, b := connNet(t, seed, memnet.Faults{}, 2, 4, func(c *Config) { c.Mode = mode })
	var wg sync.WaitGroup
	wg.Go(func() { echoUntilEOF(tn.ps[1], b, 4096) })
	return tn.ps[0], a, wg.Wait
}

// scaled returns full, or small under -short or the race detector, which
// makes a test's work several times slower.
func scaled[T int | int64](full, small T) T {
	if testing.Short() || raceOn {
		return small
	}
	return full
}

// waitReset fails t unless the pending receive whose error recvErr
// delivers, named by what, fails with ECONNRESET within bound.
func waitReset(t testing.TB, recvErr <-chan error, bound time.Duration, what string) {
	t.Helper()
	select {
	case err := <-recvErr:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v; want ECONNRESET", what, err)
		}
	case <-time.After(bound):
		t.Fatalf("%s did not fail within %v", what, bound)
	}
}

// roundTrip sends msg on p's socket a and reads as many bytes back into
// buf, allocating nothing.
func roundTrip(t testing.TB, p *Provider, a Socket, msg, buf []byte) {
	if _, err := p.Send(a, msg); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < len(msg); {
		n, err := p.Recv(a, buf[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
}

// newCQ makes a completion queue of size entries on p.
func newCQ(t testing.TB, p *Provider, size int) *CompletionQueue {
	t.Helper()
	cq, err := p.NewCompletionQueue(size, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cq
}
