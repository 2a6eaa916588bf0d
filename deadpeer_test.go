package sdx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// The request-response protocol of the dead-peer tests: a call is a
// request of callLen bytes; the server answers a ping with the same bytes
// at once, and a hold (a long poll) never.
const (
	callLen  = 16
	callPing = 'p'
	callHold = 'h'
	kvPort   = 7000
)

// serverChild is a server process on its own stack with pollers pollers
// (the child "serve NS IF POLLERS", see runChild): it serves calls on
// kvPort until it is killed, or its standard input closes.
func serverChild(ns, ifname string, pollers int) int {
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	st, err := NewStack(Config{Netns: ns, Interface: ifname, Pollers: pollers})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	ln, err := (&ListenConfig{Stack: st}).Listen(context.Background(), "tcp", netip.AddrPortFrom(st.Addr(), kvPort).String())
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			b := make([]byte, callLen)
			for {
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				if b[0] == callPing {
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}
		}()
	}
}

// startServer starts the server process on bed's host B, with as many
// pollers as st has, and waits until it listens; the test kills it at the
// end if it still runs.
func startServer(t *testing.T, bed *testbed.Bed, st *Stack) *testutil.Child {
	t.Helper()
	cmd := startChild(t, fmt.Sprintf("serve %s %s %d", bed.B.NS, bed.B.If, len(st.shards)))
	if line, _ := cmd.Out.ReadString('\n'); line != "listening\n" {
		t.Fatalf("server: %q", line)
	}
	return cmd
}

// kill ends the server process with SIGKILL and waits until it is gone.
func kill(t *testing.T, cmd *testutil.Child) time.Time {
	t.Helper()
	if err := cmd.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	cmd.Kill()
	return at
}

// call makes one call on c.
func call(c net.Conn, op byte) error {
	b := make([]byte, callLen)
	b[0] = op
	if _, err := c.Write(b); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if b[0] != op {
		return fmt.Errorf("answer %q to %q", b[0], op)
	}
	return nil
}

// dialPool dials n connections to the server over sdx.
func dialPool(t *testing.T, st *Stack, addr string, n int) []net.Conn {
	t.Helper()
	d := Dialer{Stack: st, DisableFallback: true}
	var conns []net.Conn
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		checkPath(t, c, PathSDX)
		conns = append(conns, c)
		t.Cleanup(func() { c.(*Conn).SetLinger(0); c.Close() })
	}
	return conns
}

// quantiles returns p50, p99 and max of ds.
func quantiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(f*float64(len(s))))] }
	return q(0.5), q(0.99), s[len(s)-1]
}

// servePool starts the server on bed's B and dials a pool of 64
// connections to it from st, each checked with a ping.
func servePool(t *testing.T, bed *testbed.Bed, st *Stack) (*testutil.Child, []net.Conn) {
	t.Helper()
	cmd := startServer(t, bed, st)
	conns := dialPool(t, st, netip.AddrPortFrom(bed.B.Addr, kvPort).String(), 64)
	for _, c := range conns {
		if err := call(c, callPing); err != nil {
			t.Fatal(err)
		}
	}
	return cmd, conns
}

// runKill puts a call in flight on every connection of a pool of 64 (32
// pinging back to back, 32 holding a long poll whose request the server
// has acknowledged), kills the server process, and checks that every
// call fails within 1 s. It returns when each failed, from the kill.
func runKill(t *testing.T, bed *testbed.Bed, st *Stack, beforeKill func()) []time.Duration {
	cmd, conns := servePool(t, bed, st)
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	var (
		mu     sync.Mutex
		failed []time.Duration
		killed = make(chan time.Time)
		wg     sync.WaitGroup
	)
	var killAt time.Time
	record := func(err error) {
		at := <-killed // the kill happened before any call can fail
		mu.Lock()
		defer mu.Unlock()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("a call still waited 10 s after the kill")
		}
		failed = append(failed, time.Since(at))
	}
	started := make(chan struct{}, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				started <- struct{}{}
				for {
					if err := call(c, callPing); err != nil {
						record(err)
						return
					}
				}
			}
			b := make([]byte, callLen)
			b[0] = callHold
			if _, err := c.Write(b); err != nil {
				t.Errorf("hold request: %v", err)
			}
			started <- struct{}{}
			_, err := io.ReadFull(c, b)
			record(err)
		}()
	}
	for range conns {
		<-started
	}
	time.Sleep(50 * time.Millisecond) // the hold requests are acknowledged
	if beforeKill != nil {
		beforeKill()
	}
	killAt = kill(t, cmd)
	go func() {
		for range conns {
			killed <- killAt
		}
	}()
	wg.Wait()
	for i, d := range failed {
		if d >= time.Second {
			t.Errorf("call %d failed %v after the kill; want under 1s", i, d)
		}
	}
	return failed
}

// TestVethDeadPeerPool: a server process with a pool of 64 connections
// from another host, each with a call in flight (half of them long polls
// whose requests were acknowledged, so they send nothing more), killed
// with SIGKILL: every call fails within 1 s, with the kernel's default
// ICMP rate limits; and again with every ICMP from the server's host
// dropped (a blackhole route to the client in the server's namespace), so
// that only the heartbeat finds the death; and with two pollers at each
// end, where the poller an ICMP reaches passes the death on to the other.
func TestVethDeadPeerPool(t *testing.T) {
	testutil.CheckGoroutines(t)
	for _, c := range []struct {
		name     string
		dropICMP bool
		pollers  int
	}{
		{"default ICMP rate limits", false, 1},
		{"ICMP dropped", true, 1},
		{"two pollers", false, 2},
		{"two pollers, ICMP dropped", true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			testutil.Privileged(t)
			bed := testbed.New(t, testbed.Options{Queues: c.pollers})
			st := vethStack(t, &bed.A, func(cfg *Config) { cfg.Pollers = c.pollers })
			var beforeKill func()
			if c.dropICMP {
				// In B's namespace only, from just before the kill: no
				// route to A for anything B's kernel sends, so every port
				// unreachable it would answer with goes nowhere. (The
				// server's frames go by AF_XDP, not by this route.)
				beforeKill = func() {
					if err := testbed.IP("-n", bed.B.NS, "route", "add", "blackhole", bed.A.Addr.String()+"/32"); err != nil {
						t.Fatal(err)
					}
				}
			}
			failed := runKill(t, bed, st, beforeKill)
			p50, p99, mx := quantiles(failed)
			s := st.Stats()
			t.Logf("%d calls failed after the kill: p50 %v, p99 %v, max %v (port unreachables taken %d, heartbeats out %d)",
				len(failed), p50.Round(time.Millisecond/10), p99.Round(time.Millisecond/10), mx.Round(time.Millisecond/10), s.Unreachables, s.HeartbeatsOut)
			if c.dropICMP && s.Unreachables != 0 {
				t.Errorf("%d port unreachables arrived with ICMP dropped", s.Unreachables)
			}
			// With ICMP, the first port unreachable ends every call, on
			// every poller, long before the heartbeat would.
			if pt := 800 * time.Millisecond; !c.dropICMP && mx >= pt/2 {
				t.Errorf("the last call failed %v after the kill: a poller waited for the heartbeat (%v)", mx, pt)
			}
		})
	}
}

// TestVethRestartedPeerPool: the server process is killed and started
// again while a pool holds 64 idle connections to it. The pool checks
// each connection through syscall.Conn before it reuses it, drops the
// dead ones and dials anew: no call fails.
func TestVethRestartedPeerPool(t *testing.T) {
	testutil.CheckGoroutines(t)
	bed := vethBed(t)
	st := vethStack(t, &bed.A)
	cmd, idle := servePool(t, bed, st)
	addr := netip.AddrPortFrom(bed.B.Addr, kvPort).String()
	kill(t, cmd)
	restarted := time.Now()
	startServer(t, bed, st)
	t.Logf("server back %v after the kill", time.Since(restarted).Round(time.Millisecond))

	dropped, failed := 0, 0
	d := Dialer{Stack: st, DisableFallback: true}
	get := func() net.Conn {
		for len(idle) > 0 {
			c := idle[len(idle)-1]
			idle = idle[:len(idle)-1]
			if err := connCheck(c, false); err == nil {
				return c
			}
			dropped++
			c.Close()
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var fresh []net.Conn
	for range 64 {
		c := get()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := call(c, callPing); err != nil {
			failed++
			t.Errorf("call on a connection the pool took for alive: %v", err)
			continue
		}
		fresh = append(fresh, c)
	}
	t.Logf("the pool dropped %d dead connections before reuse; %d calls failed", dropped, failed)
	if dropped != 64 {
		t.Errorf("the pool dropped %d of the 64 dead connections", dropped)
	}
	for _, c := range fresh {
		c.Close()
	}
}
