package sdx

import (
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/control"
	"github.com/sdx-project/sdx/internal/testutil"
)

// A stack's control socket lists its sdx connections with the provider's
// figures and its kernel TCP ones (here a kernel client its listener
// accepted) with their fallback reason and the kernel's figures; closing a connection takes it off the list, closing
// the stack removes the socket. Config.NoControl serves none.
func TestControlConns(t *testing.T) {
	h := leakCheckedHosts(t)
	ln := h.listen(t)
	go testutil.ServeAll(ln, testutil.Echo)
	sc, err := (&Dialer{Stack: h.a}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	echoOpen(t, sc, 4096)
	before := h.b.Fallbacks()[FallbackPeerTCP]
	kc := kernelDial(t, &h.bed.A, ln.Addr().String())
	echoOpen(t, kc, 4096)

	path := h.b.ControlPath()
	if path == "" {
		t.Fatalf("no control socket: %v", h.b.ControlErr())
	}
	r, err := control.Query(path, control.CmdConns)
	if err != nil {
		t.Fatal(err)
	}
	var sdxRow, tcpRow *control.Conn
	for i := range r.Conns {
		c := &r.Conns[i]
		switch {
		case c.Path == "sdx" && c.Peer == sc.LocalAddr().(*net.TCPAddr).AddrPort():
			sdxRow = c
		case c.Path == "tcp" && c.Peer == kc.LocalAddr().(*net.TCPAddr).AddrPort():
			tcpRow = c
		}
	}
	if sdxRow == nil || sdxRow.SDX == nil || sdxRow.SDX.BytesReceived != 4096 || sdxRow.SDX.BytesSent < 4096 || sdxRow.State != "Established" {
		t.Errorf("sdx connection's row: %+v in %+v", sdxRow, r.Conns)
	}
	want := FallbackPeerTCP.String()
	if tcpRow == nil || tcpRow.Fallback != want || tcpRow.State != "Established" || tcpRow.TCP == nil || tcpRow.TCP.BytesRecv != 4096 {
		t.Errorf("tcp connection's row: %+v (fallback %s) in %+v", tcpRow, want, r.Conns)
	}
	if r.Stack.Conns != 1 || r.Stack.TCPConns != 1 || r.Stack.Fallbacks[want] != before+1 || len(r.Stack.Queues) != 1 {
		t.Errorf("stack: %+v", r.Stack)
	}
	kc.Close()
	waitFor(t, func() bool { return h.b.Fallbacks()[FallbackPeerTCP] > 0 && len(h.b.tcpList()) == 0 })
	if r, err = control.Query(path, control.CmdConns); err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Conns {
		if c.Path == "tcp" {
			t.Errorf("a closed kernel connection is still listed: %+v", c)
		}
	}

	h.b.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("control socket %s after Close: %v", path, err)
	}
	n := vethStack(t, &h.bed.B, func(c *Config) { c.NoControl = true })
	if n.ControlPath() != "" || n.ControlErr() != nil {
		t.Errorf("NoControl: path %q, error %v", n.ControlPath(), n.ControlErr())
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500 && !cond(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !cond() {
		t.Fatal("condition not met within 5s")
	}
}

// echoOpen writes n bytes to c and reads them back, leaving c open.
func echoOpen(t *testing.T, c net.Conn, n int) {
	t.Helper()
	if _, err := c.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}
