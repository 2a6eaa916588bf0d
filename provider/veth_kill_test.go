package provider

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// killChildEnv names the namespace and interface a child process serves on.
const killChildEnv = "SDX_PROVIDER_KILL_CHILD"

// TestMain runs the child of the kill tests when asked.
func TestMain(m *testing.M) { testutil.ChildMain(m, killChildEnv, killChild) }

// killChild serves an echo on port 5000, on the namespace and interface
// that v names ("NS,IF"), until it is killed.
func killChild(v string) int {
	ns, ifname, _ := strings.Cut(v, ",")
	l, err := xdplink.New(xdplink.Config{Netns: ns, Interface: ifname})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	p, err := Startup(Config{Link: l})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	ln, err := p.Socket()
	if err == nil {
		err = p.Bind(ln, netip.AddrPortFrom(l.LocalAddr(), 5000))
	}
	if err == nil {
		err = p.Listen(ln, 4)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("listening")
	s, _, err := p.Accept(ln)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := p.Recv(s, buf)
		if err != nil || n == 0 {
			return 1
		}
		if _, err := p.Send(s, buf[:n]); err != nil {
			return 1
		}
	}
}

// TestVethPeerKilled kills the peer process with SIGKILL mid-transfer: the
// survivor's pending and later operations fail with ECONNRESET or ETIMEDOUT
// within the dead-peer bound, and its frames all come back.
func TestVethPeerKilled(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	const bound = time.Second
	bed := testbed.New(t, testbed.Options{})
	child := testutil.StartChild(t, killChildEnv+"="+bed.B.NS+","+bed.B.If)
	if line, _ := child.Out.ReadString('\n'); line != "listening\n" {
		t.Fatalf("child: %q", line)
	}

	l, err := xdplink.New(xdplink.Config{Netns: bed.A.NS, Interface: bed.A.If})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Startup(Config{Link: l, Timeout: bound})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	defer func() {
		// Cleanup closes the link, whose Close checks every UMEM frame.
		if err := p.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if st := p.Stats(); st.BuffersFree != st.Buffers {
			t.Errorf("buffers not all free after cleanup: %+v", st)
		}
	}()
	s, err := p.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Connect(s, netip.AddrPortFrom(bed.B.Addr, 5000)); err != nil {
		t.Fatal(err)
	}
	// Keep the connection busy both ways while the peer dies.
	recvErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := p.Recv(s, buf)
			if err != nil || n == 0 {
				recvErr <- err
				return
			}
		}
	}()
	chunk := make([]byte, 32<<10)
	for range 64 {
		if _, err := p.Send(s, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := child.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var sendErr error
	for sendErr == nil && time.Since(killed) < 3*bound {
		_, sendErr = p.Send(s, chunk)
	}
	select {
	case err := <-recvErr:
		el := time.Since(killed)
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("pending receive: %v, want ECONNRESET or ETIMEDOUT", err)
		}
		if el > bound+500*time.Millisecond {
			t.Fatalf("pending receive failed %v after the kill, bound %v", el, bound)
		}
		t.Logf("pending receive: %v after %v; later send: %v", err, el.Round(time.Millisecond), sendErr)
	case <-time.After(3 * bound):
		t.Fatal("pending receive still blocked three bounds after the peer died")
	}
	if !errors.Is(sendErr, syscall.ECONNRESET) && !errors.Is(sendErr, syscall.ETIMEDOUT) {
		t.Fatalf("send after the peer died: %v, want ECONNRESET or ETIMEDOUT", sendErr)
	}
	if err := p.CloseSocket(s); err != nil {
		t.Fatalf("close: %v", err)
	}
}
