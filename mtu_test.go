package sdx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/xdp"
)

// TestMTU runs sdx over veth at every MTU from IPv6's minimum to jumbo and
// beyond, in native and in generic XDP: a connection over sdx echoes 3000
// bytes (more than one frame at 1500) and 1 MiB byte-exact through
// net.Conn; the datagram size is what the receive path holds; no kernel
// drop counter moves; and every frame and buffer is accounted for at the
// end. One testbed per MTU; the two modes take turns on it.
func TestMTU(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	for i, mtu := range []int{1280, 1500, 2048, 3000, 4000, 9000, 65000} {
		t.Run(fmt.Sprint(mtu), func(t *testing.T) {
			bed := testbed.New(t, testbed.Options{MTU: mtu, Subnet: uint8(40 + i)})
			// Neighbours known up front: a send error is then a datagram
			// the link refused, not a neighbour the kernel was slow to
			// resolve on a loaded machine.
			if err := bed.Neighbours(); err != nil {
				t.Fatal(err)
			}
			for _, mode := range []bpf.Mode{bpf.ModeNative, bpf.ModeGeneric} {
				t.Run(mode.String(), func(t *testing.T) { testMTUMode(t, bed, mtu, mode, false) })
			}
			if mtu > 4000 {
				// One end without multi-buffer frames: it says why,
				// and the connection runs at its smaller datagram.
				t.Run("single-buffer", func(t *testing.T) { testMTUMode(t, bed, mtu, bpf.ModeNative, true) })
			}
		})
	}
}

// testMTUMode runs the test on bed in XDP mode; with single, host A keeps
// to single-buffer frames.
func testMTUMode(t *testing.T, bed *testbed.Bed, mtu int, mode bpf.Mode, single bool) {
	start := time.Now()
	var stacks [2]*Stack
	for i, h := range []*testbed.Host{&bed.A, &bed.B} {
		s, err := NewStack(Config{
			Netns: h.NS, Interface: h.If, XDPMode: mode, SingleBuffer: single && i == 0,
			Provider:     provider.Config{Timeout: 5 * time.Second, MaxSockets: 64, Buffers: 2048},
			CloseTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatalf("stack on %s: %v", h.NS, err)
		}
		stacks[i] = s
	}
	defer func() {
		for _, s := range stacks {
			if s != nil {
				s.Close()
			}
		}
	}()
	a, b := stacks[0], stacks[1]

	// The datagram is what both the interface and a UMEM frame carry.
	frameSize := 2048
	if mtu > xdp.MaxMTU2048 {
		frameSize = 4096
	}
	// Frames longer than a UMEM frame receives travel as multi-buffer
	// packets, in native mode at least; without them the datagram is
	// capped to one UMEM frame, and the link says why.
	one := xdp.RxFrameLen(frameSize) - frame.HeaderLen
	needMB := mtu-frame.IPv4Len-frame.UDPLen > one
	for _, s := range stacks {
		ls := s.LinkStats()
		want := mtu - frame.IPv4Len - frame.UDPLen
		if !ls.MultiBuffer {
			want = min(want, one)
		}
		if ls.XDPMode != mode || ls.FrameSize != frameSize || ls.MTU != want {
			t.Fatalf("%v: XDP %v (fallback %q), frames of %d, datagram %d; want %v, %d, %d",
				s, ls.XDPMode, ls.XDPFallback, ls.FrameSize, ls.MTU, mode, frameSize, want)
		}
		if s == a && single {
			if ls.MultiBuffer || ls.MultiBufferFallback == "" {
				t.Fatalf("%v: single-buffer frames asked for; multi-buffer %v, fallback %q", s, ls.MultiBuffer, ls.MultiBufferFallback)
			}
		} else if ls.MultiBuffer != needMB && mode == bpf.ModeNative || !ls.MultiBuffer && needMB && ls.MultiBufferFallback == "" {
			t.Fatalf("%v: MTU %d, multi-buffer frames %v (fallback %q)", s, mtu, ls.MultiBuffer, ls.MultiBufferFallback)
		}
		t.Logf("%v: datagram %d, multi-buffer %v %s", s, ls.MTU, ls.MultiBuffer, ls.MultiBufferFallback)
		if mode == bpf.ModeGeneric && ls.XDPFallback == "" {
			t.Fatalf("%v: generic XDP without a reason", s)
		}
		if mode == bpf.ModeNative && (!ls.XDPFrags || ls.XDPFallback != "") {
			t.Fatalf("%v: native XDP, frags-aware %v, fallback %q", s, ls.XDPFrags, ls.XDPFallback)
		}
	}

	lc := ListenConfig{Stack: b}
	l, err := lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(b.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		_, err = io.Copy(s, s)
		served <- errors.Join(err, s.Close()) // graceful: the client reads the end of the stream
	}()
	d := Dialer{Stack: a, ProbeTimeout: testProbe}
	nc, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*Conn)
	checkPath(t, c, PathSDX)
	for i, n := range []int{3000, 1 << 20} {
		data := seeded(uint64(i+1), n)
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			wrote <- err
		}()
		got := make([]byte, n)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("echo of %d bytes: %v; %+v", n, err, a.Provider().Stats())
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("echo of %d bytes differs", n)
		}
	}
	c.CloseWrite()
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	c.SetLinger(0)
	c.Close()

	for _, s := range stacks {
		st := s.Provider().Stats()
		if k := s.LinkStats().Kernel; k.RxDropped != 0 || k.RxInvalid != 0 || k.TxInvalid != 0 || k.RxRingFull != 0 {
			t.Errorf("%v: kernel drops %+v", s, k)
		}
		if st.TooBig != 0 || st.SendErrors != 0 {
			t.Errorf("%v: too big %d, send errors %d", s, st.TooBig, st.SendErrors)
		}
	}
	// Every buffer back once both connections are gone; closing the
	// stacks checks every UMEM frame.
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range stacks {
		for s.Provider().Stats().BuffersHeld() != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if st := s.Provider().Stats(); st.BuffersHeld() != 0 {
			t.Errorf("%v: %d buffers held after close: %+v", s, st.BuffersHeld(), st)
		}
	}
	for i, s := range stacks {
		if err := s.Close(); err != nil {
			t.Errorf("close %v: %v", s, err)
		}
		stacks[i] = nil
	}
	t.Logf("MTU %d %v: %d-byte frames; %v", mtu, mode, frameSize, time.Since(start).Round(time.Millisecond))
}
