package sdx

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
)

// TestReadWriteAllocs proves the data path allocates nothing: a 64-byte
// request/response through net.Conn, with the deadlines net/http sets on
// every exchange, in every polling mode.
func TestReadWriteAllocs(t *testing.T) {
	testutil.Privileged(t)
	for _, m := range []provider.PollMode{provider.PollDefault, provider.PollAdaptive, provider.PollBusy} {
		t.Run(m.String(), func(t *testing.T) {
			_, _, c := echoConn(t, withMode(m))
			buf := make([]byte, 64)
			var failed error
			allocs := testing.AllocsPerRun(2000, func() {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(buf); err != nil && failed == nil {
					failed = err
				}
				if _, err := io.ReadFull(c, buf); err != nil && failed == nil {
					failed = err
				}
			})
			if failed != nil {
				t.Fatal(failed)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per Write+Read, want 0", allocs)
			}
		})
	}
}

// TestManyGoroutinesManyConns runs 256 goroutines over 64 connections:
// four writers per connection send framed requests concurrently (each
// Write carries one whole frame), one reader per connection hands the
// echoed frames back to their writers, everything under deadlines, and
// every byte is checked against what its seed regenerates.
func TestManyGoroutinesManyConns(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		const (
			conns   = 64
			writers = 4
			rounds  = 12
			maxLen  = 3000
		)
		ln := h.listen(t)
		go frameEcho(ln)
		var wg sync.WaitGroup
		errc := make(chan error, conns*(writers+1))
		for ci := range conns {
			d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			checkPath(t, c, PathSDX)
			defer c.Close()
			replies := make([]chan []byte, writers)
			for w := range replies {
				replies[w] = make(chan []byte, 1)
			}
			wg.Add(1 + writers)
			go func() { // the connection's reader
				defer wg.Done()
				for range writers * rounds {
					c.SetReadDeadline(time.Now().Add(20 * time.Second))
					var hdr [8]byte
					if _, err := io.ReadFull(c, hdr[:]); err != nil {
						errc <- fmt.Errorf("conn %d: read: %w", ci, err)
						return
					}
					id, n := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
					if int(id>>16) >= writers || n > maxLen {
						errc <- fmt.Errorf("conn %d: bad frame header %x", ci, hdr)
						return
					}
					p := make([]byte, n)
					if _, err := io.ReadFull(c, p); err != nil {
						errc <- fmt.Errorf("conn %d: read: %w", ci, err)
						return
					}
					replies[id>>16] <- append(hdr[:], p...)
				}
			}()
			for w := range writers {
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(ci), uint64(w)))
					for i := range rounds {
						frame := make([]byte, 8+1+rng.IntN(maxLen))
						binary.BigEndian.PutUint32(frame, uint32(w)<<16|uint32(i))
						binary.BigEndian.PutUint32(frame[4:], uint32(len(frame)-8))
						for j := 8; j < len(frame); j++ {
							frame[j] = byte(rng.Uint32())
						}
						c.SetWriteDeadline(time.Now().Add(20 * time.Second))
						if _, err := c.Write(frame); err != nil {
							errc <- fmt.Errorf("conn %d writer %d: write: %w", ci, w, err)
							return
						}
						select {
						case got := <-replies[w]:
							if string(got) != string(frame) {
								errc <- fmt.Errorf("conn %d writer %d round %d: the echo differs", ci, w, i)
								return
							}
						case <-time.After(30 * time.Second):
							errc <- fmt.Errorf("conn %d writer %d round %d: no echo", ci, w, i)
							return
						}
					}
				}()
			}
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("a: %+v", h.a.Provider().Stats())
			t.Logf("b: %+v", h.b.Provider().Stats())
		}
	})
}

// frameEcho echoes frames (a 4-byte id, a 4-byte length, the payload)
// on every connection ln accepts, each frame with one Write.
func frameEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 8+64<<10)
			for {
				if _, err := io.ReadFull(c, buf[:8]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(buf[4:8]))
				if n > len(buf)-8 {
					return
				}
				if _, err := io.ReadFull(c, buf[8:8+n]); err != nil {
					return
				}
				if _, err := c.Write(buf[:8+n]); err != nil {
					return
				}
			}
		}()
	}
}

// TestCPUBoundProgress: a goroutine that only computes keeps its pace
// while an sdx connection is busy, as it does beside a busy kernel TCP
// connection: the default polling mode spins on no core a goroutine could
// use. Each connection runs a 64-byte ping-pong as fast as it can.
func TestCPUBoundProgress(t *testing.T) {
	testutil.Privileged(t)
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs GOMAXPROCS >= 2")
	}
	h, ln, sc := echoConn(t)
	const span = 400 * time.Millisecond
	// rate runs the computing goroutine for span beside conn's ping-pong
	// (none if conn is nil) and returns its iterations per second.
	rate := func(conn net.Conn) float64 {
		stop := make(chan struct{})
		var pp sync.WaitGroup
		if conn != nil {
			pp.Add(1)
			go func() {
				defer pp.Done()
				buf := make([]byte, 64)
				for {
					select {
					case <-stop:
						return
					default:
					}
					conn.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := conn.Write(buf); err != nil {
						return
					}
					if _, err := io.ReadFull(conn, buf); err != nil {
						return
					}
				}
			}()
			time.Sleep(20 * time.Millisecond) // the exchange is running
		}
		var n atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			x := uint64(1)
			deadline := time.Now().Add(span)
			for time.Now().Before(deadline) {
				for range 1000 {
					x = x*6364136223846793005 + 1442695040888963407
				}
				n.Add(1)
			}
			_ = x
		}()
		<-done
		close(stop)
		pp.Wait()
		return float64(n.Load()) / span.Seconds()
	}
	kc := kernelDial(t, &h.bed.A, ln.Addr().String())
	// Alternate and keep the best of three, so a burst of other load on
	// the machine does not decide.
	var alone, beside, besideTCP float64
	for range 3 {
		alone = max(alone, rate(nil))
		besideTCP = max(besideTCP, rate(kc))
		beside = max(beside, rate(sc))
	}
	t.Logf("computing goroutine: %.0f/s alone, %.0f/s beside kernel TCP, %.0f/s beside sdx", alone, besideTCP, beside)
	if beside < 0.75*besideTCP {
		t.Errorf("beside a busy sdx connection the computing goroutine ran at %.0f/s, %.2f× its pace beside kernel TCP (%.0f/s): want at least 0.75×",
			beside, beside/besideTCP, besideTCP)
	}
}
