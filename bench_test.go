package sdx

import (
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"

	"github.com/sdx-project/sdx/provider"
)

// BenchmarkPingPong measures a 64-byte request/response over the veth
// testbed through the switch, as an application sees it (net.Conn, no
// pinning), in each polling mode and over kernel TCP: ns/op is one round
// trip, and allocs/op proves the data path allocates nothing.
func BenchmarkPingPong(b *testing.B) {
	for _, m := range []provider.PollMode{provider.PollAdaptive, provider.PollPark, provider.PollBusy} {
		b.Run("sdx-"+m.String(), func(b *testing.B) {
			_, _, c := echoConn(b, withMode(m))
			pingPong(b, c)
		})
	}
	b.Run("tcp", func(b *testing.B) {
		h, ln, _ := echoConn(b)
		pingPong(b, kernelDial(b, &h.bed.A, ln.Addr().String()))
	})
}

// echoConn builds the veth testbed with a stack on each end (tweaked),
// an echo listener on b and a connection to it from a over sdx.
func echoConn(t testing.TB, tweak ...func(*Config)) (*hosts, *Listener, net.Conn) {
	t.Helper()
	h := vethHosts(t, tweak...)
	ln := h.listen(t)
	go echoAll(ln)
	return h, ln, sdxDial(t, h, ln.Addr().String())
}

// sdxDial connects from h.a to addr over sdx; the connection closes when
// the test ends.
func sdxDial(t testing.TB, h *hosts, addr string) net.Conn {
	t.Helper()
	d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	checkPath(t, c, PathSDX)
	return c
}

// echoAll echoes 64-byte messages on every connection ln accepts.
func echoAll(ln net.Listener) {
	testutil.ServeAll(ln, func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
}

func pingPong(b *testing.B, c net.Conn) { pingPongWith(b, c, make([]byte, 64)) }

// pingPongWith writes buf and reads as much back, once per iteration.
func pingPongWith(b *testing.B, c net.Conn, buf []byte) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnect measures a connection's whole life through the switch,
// as sdxbench's connrate does: dial, accept, the server's half close, the
// client's close, the server's close. ns/op is one connection.
func BenchmarkConnect(b *testing.B) {
	h := vethHosts(b)
	ln := h.listen(b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var one [1]byte
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*Conn).CloseWrite()
			c.Read(one[:])
			c.Close()
		}
	}()
	d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
	var one [1]byte
	b.ReportAllocs()
	for b.Loop() {
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(one[:]); err != io.EOF {
			b.Fatalf("read: %v, want EOF", err)
		}
		c.Close()
	}
	ln.Close()
	<-done
}

// BenchmarkStreams measures what a net.Conn user moves at MTU 1500 and at
// 9000, where sdx's datagrams are multi-buffer packets of 8972 bytes: a
// 16 KiB request and response (ns/op is one round trip) and 64 KiB writes
// one way (MB/s), over sdx and over kernel TCP, to the same server on the
// same veth pair. direct-B/op is what sdx received straight into a
// waiting Read's buffer.
func BenchmarkStreams(b *testing.B) {
	for i, mtu := range []int{1500, 9000} {
		b.Run(fmt.Sprintf("mtu=%d", mtu), func(b *testing.B) {
			testutil.Privileged(b)
			bed := testbed.New(b, testbed.Options{MTU: mtu, Subnet: uint8(90 + i)})
			if err := bed.Neighbours(); err != nil {
				b.Fatal(err)
			}
			h := &hosts{a: vethStack(b, &bed.A), b: vethStack(b, &bed.B), bed: bed}
			ln := h.listen(b)
			go testutil.ServeAll(ln, serveStream)
			dial := map[string]func() net.Conn{
				"sdx": func() net.Conn { return sdxDial(b, h, ln.Addr().String()) },
				"tcp": func() net.Conn { return kernelDial(b, &bed.A, ln.Addr().String()) },
			}
			for _, path := range []string{"sdx", "tcp"} {
				b.Run("rr16k/"+path, func(b *testing.B) {
					c := dial[path]()
					buf := make([]byte, 16<<10)
					buf[0] = 'e'
					direct := h.a.Provider().Stats().RecvDirect
					pingPongWith(b, c, buf)
					if path == "sdx" {
						b.ReportMetric(float64(h.a.Provider().Stats().RecvDirect-direct)/float64(b.N), "direct-B/op")
					}
				})
				b.Run("bulk/"+path, func(b *testing.B) {
					c := dial[path]()
					buf := make([]byte, 64<<10)
					if _, err := c.Write([]byte{'s'}); err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(len(buf)))
					b.ReportAllocs()
					for b.Loop() {
						if _, err := c.Write(buf); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// serveStream serves BenchmarkStreams: a connection whose first byte is
// 'e' echoes 16 KiB messages (that byte included), any other is a sink.
func serveStream(c net.Conn) {
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		return
	}
	if buf[0] != 'e' {
		io.CopyBuffer(io.Discard, c, buf)
		return
	}
	msg := buf[:16<<10]
	for off := 1; ; off = 0 {
		if _, err := io.ReadFull(c, msg[off:]); err != nil {
			return
		}
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}
