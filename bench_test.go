package sdx

import (
	"io"
	"net"
	"testing"
)

// BenchmarkPingPong measures a 64-byte request/response over the veth
// testbed through the switch, on each path: ns/op is one round trip.
func BenchmarkPingPong(b *testing.B) {
	h := vethHosts(b)
	ln := h.listen(b)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						c.Close()
						return
					}
					if _, err := c.Write(buf); err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	dial := map[Path]func() net.Conn{
		PathSDX: func() net.Conn {
			d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			return c
		},
		PathTCP: func() net.Conn { return kernelDial(b, &h.bed.A, ln.Addr().String()) },
	}
	for _, path := range []Path{PathSDX, PathTCP} {
		b.Run(string(path), func(b *testing.B) {
			c := dial[path]()
			defer c.Close()
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
		})
	}
}
