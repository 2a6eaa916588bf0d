package sdx

import (
	"io"
	"net"
	"testing"

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
	d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	checkPath(t, c, PathSDX)
	return h, ln, c
}

// echoAll echoes 64-byte messages on every connection ln accepts.
func echoAll(ln net.Listener) {
	serveAll(ln, func(c net.Conn) {
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

// serveAll runs serve on every connection ln accepts, each on its own
// goroutine, and closes the connection after it, until ln closes.
func serveAll(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

func pingPong(b *testing.B, c net.Conn) {
	buf := make([]byte, 64)
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
