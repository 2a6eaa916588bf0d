package sdx

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// seeded returns n bytes drawn from seed.
func seeded(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 's'}).Read(b)
	return b
}

func TestEcho(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		ln := h.listen(t)
		c, s := h.pair(t, ln)
		if c.Path() != PathSDX || s.Path() != PathSDX {
			t.Fatalf("paths %s, %s; want sdx", c.Path(), s.Path())
		}
		if got, want := c.RemoteAddr().String(), ln.Addr().String(); got != want {
			t.Errorf("client remote %s, want %s", got, want)
		}
		if got, want := s.RemoteAddr().String(), c.LocalAddr().String(); got != want {
			t.Errorf("server remote %s, want %s", got, want)
		}
		go func() {
			io.Copy(struct{ io.Writer }{s}, struct{ io.Reader }{s})
			s.Close()
		}()
		data := seeded(1, 4<<20)
		start := time.Now()
		go func() {
			c.Write(data)
			c.CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("echoed %d bytes differ from the %d sent", len(got), len(data))
		}
		t.Logf("4 MiB echoed in %v", time.Since(start))
	})
}

// A read deadline that passes leaves the posted receive in place; the data
// it brings is returned by the next Read.
func TestReadDeadlineKeepsData(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %d, %v; want a timeout", n, err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("%v is not a net.Error with Timeout", err)
		}
		if _, err := s.Write([]byte("late bytes")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Time{})
		n, err = c.Read(buf)
		if err != nil || string(buf[:n]) != "late bytes" {
			t.Fatalf("read after the deadline: %q, %v", buf[:n], err)
		}

		// The same, many times over, against a stream: no byte lost or
		// repeated.
		data := seeded(2, 1<<20)
		go func() {
			for off := 0; off < len(data); off += 4096 {
				s.Write(data[off : off+4096])
				if off%(64<<10) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		var got []byte
		timeouts := 0
		for len(got) < len(data) {
			c.SetReadDeadline(time.Now().Add(200 * time.Microsecond))
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal(err)
				}
				timeouts++
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatal("data read across deadlines differs from the data sent")
		}
		t.Logf("%d timeouts while reading 1 MiB", timeouts)
	})
}

// The peer's hard close (linger 0) fails Read with ECONNRESET.
func TestPeerReset(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		errc := parkedRead(c, 10, 10*time.Millisecond)
		s.SetLinger(0)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read after the peer's reset: %v, want ECONNRESET", err)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "read" {
				t.Fatalf("%#v is not a read *net.OpError", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("read still blocked after the peer's reset")
		}
		// Write fails too; as over TCP, the first may still be taken.
		var err error
		for range 100 {
			if _, err = c.Write([]byte("x")); err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("write after the peer's reset: %v, want ECONNRESET", err)
		}
	})
}

// Close makes blocked calls, and every later one, return net.ErrClosed.
func TestCloseUnblocks(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, _ := h.pair(t, h.listen(t))
		errc := parkedRead(c, 10, 10*time.Millisecond)
		c.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read: %v, want net.ErrClosed", err)
		}
		// The background close holds the connection while it waits for
		// the peer; later calls do not wait for it.
		start := time.Now()
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
		if err := c.CloseWrite(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("CloseWrite after close: %v", err)
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Fatalf("calls after close took %v", took)
		}
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second close: %v", err)
		}
		if err := c.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("SetDeadline after close: %v", err)
		}
	})
}

// Writes and reads of seeded random sizes, concurrent: the bytes arrive
// in order, none lost or repeated.
func TestStreamChunks(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		c, s := h.pair(t, h.listen(t))
		data := seeded(11, 4<<20)
		go func() {
			r := rand.New(rand.NewPCG(1, 2))
			for off := 0; off < len(data); {
				n := min(1+r.IntN(5000), len(data)-off)
				if _, err := c.Write(data[off : off+n]); err != nil {
					t.Error(err)
					return
				}
				off += n
			}
			c.CloseWrite()
		}()
		r := rand.New(rand.NewPCG(3, 4))
		var got []byte
		buf := make([]byte, 3000)
		for {
			n, err := s.Read(buf[:1+r.IntN(len(buf))])
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes of %d; they differ", len(got), len(data))
		}
	})
}
