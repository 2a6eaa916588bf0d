package sdx

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
)

// waitSockets waits until st's provider holds want descriptors and
// returns how long that took.
func waitSockets(t *testing.T, st *Stack, want int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		n := st.Provider().Stats().Sockets
		if n == want {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%v holds %d sockets, want %d", st, n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// readAll reads c to its end in the background; the channel gets what was
// read and the error that ended it (nil for io.EOF).
func readAll(c net.Conn, pause time.Duration) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		var got []byte
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				ch <- readResult{got, err}
				return
			}
			time.Sleep(pause)
		}
	}()
	return ch
}

type readResult struct {
	data []byte
	err  error
}

// Default linger: Close returns at once; the peer reads every byte, then
// io.EOF; once the peer closes too, both sockets are released.
func TestLingerDefault(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		data := seeded(3, 1<<20)
		// A slow reader: the data is still on its way when Close returns.
		got := readAll(s, 200*time.Microsecond)
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		took := timedClose(t, c)
		if took > 100*time.Millisecond {
			t.Errorf("Close took %v; the default linger returns at once", took)
		}
		r := <-got
		if r.err != nil || !bytes.Equal(r.data, data) {
			t.Fatalf("peer read %d bytes (error %v), want the %d written, then io.EOF", len(r.data), r.err, len(data))
		}
		if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("read after io.EOF: %d, %v", n, err)
		}
		s.Close()
		da, db := waitSockets(t, h.a, 0), waitSockets(t, h.b, 1) // b keeps its listener
		t.Logf("Close returned in %v; sockets released %v (closer) and %v (peer) after the peer's Close", took, da, db)
	})
}

// Linger 0: Close discards what is unsent and resets at once; the peer's
// reads fail with ECONNRESET.
func TestLingerZero(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		data := seeded(4, 4<<20)
		took, err := closeBlockedWrite(t, c, data, 0)
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked write: %v, want net.ErrClosed", err)
		}
		if n := h.a.Provider().Stats().Sockets; n != 0 {
			t.Errorf("the closer still holds %d sockets after Close", n)
		}
		r := <-readAll(s, 0)
		if !errors.Is(r.err, syscall.ECONNRESET) || len(r.data) >= len(data) {
			t.Fatalf("peer read %d bytes, then %v; want fewer than %d, then ECONNRESET", len(r.data), r.err, len(data))
		}
		if !bytes.Equal(r.data, data[:len(r.data)]) {
			t.Fatal("the bytes read before the reset differ from the ones written")
		}
		t.Logf("Close took %v; peer read %d of %d bytes, then %v", took, len(r.data), len(data), r.err)
	})
}

// Linger n > 0, delivered in time: Close blocks until the peer has read
// everything and closed, then returns.
func TestLingerDelivered(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		data := seeded(5, 1<<20)
		const peerDelay = 100 * time.Millisecond
		peer := make(chan readResult, 1)
		go func() {
			r := <-readAll(s, 0)
			time.Sleep(peerDelay)
			s.Close()
			peer <- r
		}()
		c.SetLinger(5)
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		took := timedClose(t, c)
		r := <-peer
		if r.err != nil || !bytes.Equal(r.data, data) {
			t.Fatalf("peer read %d bytes (error %v), want %d, then io.EOF", len(r.data), r.err, len(data))
		}
		if took < peerDelay || took > 5*time.Second {
			t.Fatalf("Close took %v; want the peer's close (after %v), well before the linger time", took, peerDelay)
		}
		if n := h.a.Provider().Stats().Sockets; n != 0 {
			t.Errorf("the closer holds %d sockets after Close", n)
		}
		waitSockets(t, h.b, 1)
		t.Logf("Close returned after %v (peer closed %v after reading)", took, peerDelay)
	})
}

// Linger n > 0, not delivered: the peer does not read; Close gives up
// after n seconds and resets.
func TestLingerExpires(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		data := seeded(6, 4<<20)
		took, _ := closeBlockedWrite(t, c, data, 1)
		if took < time.Second || took > 3*time.Second {
			t.Errorf("Close took %v, want the 1s linger", took)
		}
		r := <-readAll(s, 0)
		if !errors.Is(r.err, syscall.ECONNRESET) || len(r.data) >= len(data) {
			t.Fatalf("peer read %d bytes, then %v; want fewer than %d, then ECONNRESET", len(r.data), r.err, len(data))
		}
		t.Logf("Close took %v; peer read %d of %d bytes, then %v", took, len(r.data), len(data), r.err)
	})
}

// A request/response with a half close: the requester's CloseWrite, the
// responder's Close right after writing; the requester still reads the
// whole response, then io.EOF.
func TestCloseWrite(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		req, resp := seeded(7, 100<<10), seeded(8, 2<<20)
		go func() {
			r := <-readAll(s, 0)
			if r.err != nil || !bytes.Equal(r.data, req) {
				t.Errorf("responder read %d bytes (error %v), want %d", len(r.data), r.err, len(req))
			}
			s.Write(resp)
			s.Close()
		}()
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("write after CloseWrite: %v, want EPIPE", err)
		}
		time.Sleep(20 * time.Millisecond) // a slow reader
		r := <-readAll(c, 0)
		if r.err != nil || !bytes.Equal(r.data, resp) {
			t.Fatalf("requester read %d bytes (error %v), want %d, then io.EOF", len(r.data), r.err, len(resp))
		}
		c.Close()
		da, db := waitSockets(t, h.a, 0), waitSockets(t, h.b, 1)
		t.Logf("sockets released %v (requester) and %v (responder) after the requester's Close", da, db)
	})
}

// Data that arrives after Close resets the connection at once, as over
// kernel TCP, instead of waiting for the background close's time-out.
func TestDataAfterClose(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		c.Close()
		var err error
		start := time.Now()
		for err == nil && time.Since(start) < 5*time.Second {
			_, err = s.Write([]byte("are you there?"))
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("writes to a closed peer: %v, want ECONNRESET", err)
		}
		waitSockets(t, h.a, 0)
		t.Logf("writer saw ECONNRESET after %v", time.Since(start))
	})
}

// A background close whose peer never closes gives up after the stack's
// CloseTimeout and resets; the peer, which had read io.EOF, keeps reading
// io.EOF.
func TestCloseTimeout(t *testing.T) {
	testutil.CheckGoroutines(t)
	const timeout = 200 * time.Millisecond
	h := memHosts(t, func(c *Config) { c.CloseTimeout = timeout })
	c, s := h.pair(t, h.listen(t))
	c.Write([]byte("last words"))
	start := time.Now()
	c.Close()
	r := <-readAll(s, 0)
	if r.err != nil || string(r.data) != "last words" {
		t.Fatalf("peer read %q, then %v", r.data, r.err)
	}
	waitSockets(t, h.a, 0)
	took := time.Since(start)
	if took < timeout || took > timeout+time.Second {
		t.Errorf("the unanswered close ended after %v, want the %v CloseTimeout", took, timeout)
	}
	if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("peer read after the reset: %d, %v; want io.EOF (it had read the end)", n, err)
	}
	t.Logf("background close reset the connection after %v", took)
}

// Closing the stack resets its connections and closes its listeners:
// blocked calls return an error matching net.ErrClosed.
func TestStackClose(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		ln := h.listen(t)
		c, _ := h.pair(t, ln)
		c2, _ := h.pair(t, ln)
		errs := make(chan error, 3)
		go func() {
			_, err := c.Read(make([]byte, 1))
			errs <- err
		}()
		go func() {
			_, err := ln.Accept()
			errs <- err
		}()
		c2.Close() // a background close the peer never answers
		time.Sleep(10 * time.Millisecond)
		start := time.Now()
		if err := h.a.Close(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("the stack's Close waited %v for a background close", took)
		}
		if err := h.b.Close(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := <-errs; !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked call after the stack's Close: %v, want net.ErrClosed", err)
			}
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("write after the stack's Close: %v", err)
		}
		if err := h.a.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		d := Dialer{Stack: h.a, DisableFallback: true}
		if _, err := d.Dial("tcp", ln.Addr().String()); err == nil {
			t.Error("dial on a closed stack succeeded")
		}
	})
}

// The peer closes first; this side half-closes before it has read what
// the peer sent, then reads. The peer's hard close, which follows this
// side's disconnect, must not cost a byte: CloseWrite takes what remains
// of the peer's stream out of the provider first.
func TestCloseWriteAfterPeerClose(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		data := seeded(9, 200<<10) // more than the switch buffers, less than the provider's
		if _, err := s.Write(data); err != nil {
			t.Fatal(err)
		}
		s.Close()
		time.Sleep(50 * time.Millisecond) // the data and the disconnect arrive
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		waitSockets(t, h.b, 1) // the peer has reset and released its socket
		r := <-readAll(c, 0)
		if r.err != nil || !bytes.Equal(r.data, data) {
			t.Fatalf("read %d bytes (error %v) after the peer's close, want %d, then io.EOF", len(r.data), r.err, len(data))
		}
	})
}
