package sdx

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"

	"github.com/sdx-project/sdx/internal/testutil"
)

// pipe makes a nettest.MakePipe of a dial and an accept; c1 is the conn
// under test.
func pipe(dial func() (net.Conn, error), ln net.Listener, dialedFirst bool) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2, err = dialAccept(dial, ln)
		if err != nil {
			return nil, nil, nil, err
		}
		if !dialedFirst {
			c1, c2 = c2, c1
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	}
}

// dialPath is a dial with d to ln that checks the connection took path
// want.
func dialPath(t *testing.T, d *Dialer, ln net.Listener, want Path) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		c, err := d.Dial("tcp", ln.Addr().String())
		if err == nil {
			checkPath(t, c, want)
		}
		return c, err
	}
}

// TestNetTest runs the net.Conn conformance suite over the SAN path (both
// ends sdx, in memory and over veth) and over the fallback path (one end
// sdx on kernel TCP, the other a plain kernel socket).
func TestNetTest(t *testing.T) {
	for _, kind := range []string{"mem", "veth"} {
		for _, dialedFirst := range []bool{true, false} {
			name := kind + "/sdx/"
			if dialedFirst {
				name += "dialed"
			} else {
				name += "accepted"
			}
			t.Run(name, func(t *testing.T) {
				testutil.CheckGoroutines(t)
				var h *hosts
				if kind == "mem" {
					h = memHosts(t)
				} else {
					h = vethHosts(t)
				}
				ln := h.listen(t)
				d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
				nettest.TestConn(t, pipe(dialPath(t, &d, ln, PathSDX), ln, dialedFirst))
			})
		}
	}

	// Fallback, dial side: a's stack dials b, which runs no sdx at all.
	t.Run("veth/tcp/dialed", func(t *testing.T) {
		testutil.CheckGoroutines(t)
		bed := vethBed(t)
		a := vethStack(t, &bed.A)
		ln := kernelListen(t, &bed.B, 0)
		nettest.TestConn(t, pipe(dialPath(t, &Dialer{Stack: a}, ln, PathTCP), ln, true))
	})

	// Fallback, accept side: a plain kernel client dials b's sdx listener.
	t.Run("veth/tcp/accepted", func(t *testing.T) {
		testutil.CheckGoroutines(t)
		bed := vethBed(t)
		h := &hosts{b: vethStack(t, &bed.B), bed: bed}
		ln := h.listen(t)
		dial := func() (net.Conn, error) {
			return kernelDialErr(&bed.A, ln.Addr().String())
		}
		mp := pipe(dial, ln, false)
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			c1, c2, stop, err = mp()
			if err == nil {
				checkPath(t, c1, PathTCP)
			}
			return
		})
	})
}
