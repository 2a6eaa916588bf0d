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
			h := vethHosts(b, withMode(m))
			ln := h.listen(b)
			go echoAll(ln)
			d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			pingPong(b, c)
		})
	}
	b.Run("tcp", func(b *testing.B) {
		h := vethHosts(b)
		ln := h.listen(b)
		go echoAll(ln)
		c := kernelDial(b, &h.bed.A, ln.Addr().String())
		pingPong(b, c)
	})
}

// echoAll echoes 64-byte messages on every connection ln accepts.
func echoAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
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
