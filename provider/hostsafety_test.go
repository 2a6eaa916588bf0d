package provider

// Host safety: a provider process killed at any point leaves no XDP
// program on its interface, and the interface keeps working for the
// kernel and for the next provider.

import (
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// TestHostSafetyKilledProvider kills, with SIGKILL, a provider process
// serving on B (the child of TestVethPeerKilled) while it starts up, while
// it listens, and while it carries a stream. Each time the kernel takes its
// steer program off the interface (the bpf_link dies with the process),
// kernel TCP, UDP, ICMP and ARP work on the interface, and a new provider
// attaches there and carries a connection.
func TestHostSafetyKilledProvider(t *testing.T) {
	testutil.Privileged(t)
	for i, when := range []string{"starting", "listening", "streaming"} {
		t.Run(when, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			bed := testbed.New(t, testbed.Options{Subnet: byte(80 + i)})
			child := testutil.StartChild(t, killChildEnv+"="+bed.B.NS+","+bed.B.If)

			switch when {
			case "starting":
				// Somewhere in xdplink.New or Startup: the child needs
				// tens of milliseconds to get there.
				time.Sleep(time.Duration(5+i) * time.Millisecond)
			default:
				if line, _ := child.Out.ReadString('\n'); line != "listening\n" {
					t.Fatalf("child: %q", line)
				}
				if shown := testutil.XDPShown(t, bed.B.NS, bed.B.If); shown == "" {
					t.Fatal("the child serves with no XDP program on its interface")
				}
			}
			if when == "streaming" {
				p, _ := startOn(t, &bed.A, Config{Timeout: time.Second})
				s := must[Socket](t)(p.Socket())
				if err := p.Connect(s, netip.AddrPortFrom(bed.B.Addr, 5000)); err != nil {
					t.Fatal(err)
				}
				chunk := make([]byte, 32<<10)
				go func() {
					buf := make([]byte, 64<<10)
					for {
						if n, err := p.Recv(s, buf); err != nil || n == 0 {
							return
						}
					}
				}()
				for range 32 {
					if _, err := p.Send(s, chunk); err != nil {
						t.Fatal(err)
					}
				}
				child.Kill()
				p.CloseSocket(s)
				if err := p.Cleanup(); err != nil {
					t.Errorf("cleanup on A: %v", err)
				}
			}
			child.Kill()

			deadline := time.Now().Add(5 * time.Second)
			for testutil.XDPShown(t, bed.B.NS, bed.B.If) != "" && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if shown := testutil.XDPShown(t, bed.B.NS, bed.B.If); shown != "" {
				t.Fatalf("killed while %s: %s still shows %q", when, bed.B.If, shown)
			}
			if err := testutil.TCPEcho(bed.A.NS, bed.B.NS, bed.B.Addr, 8080, 64<<10); err != nil {
				t.Errorf("kernel TCP after the kill: %v", err)
			}
			if err := testutil.UDPEcho(bed.A.NS, bed.B.NS, bed.B.Addr, DefaultUDPPort); err != nil {
				t.Errorf("kernel UDP to the sdx port after the kill: %v", err)
			}
			if err := testbed.IP("-n", bed.A.NS, "neigh", "flush", "dev", bed.A.If); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("ip", "netns", "exec", bed.A.NS, "ping", "-c", "2", "-i", "0.1", "-W", "2", bed.B.Addr.String()).CombinedOutput(); err != nil {
				t.Errorf("ping after the kill and a neighbour flush: %v\n%s", err, out)
			}
			// A new provider attaches on B and carries a connection.
			if err := newProviderWorks(t, bed); err != nil {
				t.Errorf("a new provider on the interface after the kill: %v", err)
			}
		})
	}
}

// newProviderWorks starts a provider on B and one on A, and moves a
// seeded megabyte from A to B.
func newProviderWorks(t *testing.T, bed *testbed.Bed) error {
	var b *Provider
	var err error
	// Binding right after the killed socket's queue went can meet EBUSY
	// for a moment (ARCHITECTURE.md): retry briefly.
	for deadline := time.Now().Add(2 * time.Second); ; {
		var l *xdplink.Link
		if l, err = xdplink.New(xdplink.Config{Netns: bed.B.NS, Interface: bed.B.If}); err == nil {
			if b, err = Startup(Config{Link: l}); err != nil {
				l.Close()
			}
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("start on B: %w", err)
	}
	defer b.Cleanup()
	a, _ := startOn(t, &bed.A, Config{})
	ln := must[Socket](t)(b.Socket())
	if err := b.Bind(ln, netip.AddrPortFrom(bed.B.Addr, 6000)); err != nil {
		return err
	}
	if err := b.Listen(ln, 1); err != nil {
		return err
	}
	acc := make(chan Socket, 1)
	go func() {
		r, _, _ := b.Accept(ln)
		acc <- r
	}()
	s := must[Socket](t)(a.Socket())
	if err := a.Connect(s, netip.AddrPortFrom(bed.B.Addr, 6000)); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	r := <-acc
	_, err = sendStream(a, b, s, r, 60, 1<<20)
	a.CloseSocket(s)
	b.CloseSocket(r)
	b.CloseSocket(ln)
	return err
}
