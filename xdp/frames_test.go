package xdp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/xdp"
)

// The kernel's headroom is real: with 2048-byte UMEM frames on a 9000-byte
// MTU, B receives an Ethernet frame of RxFrameLen (1792) bytes, and drops
// one of a byte more before its rx ring, counting it in RxDropped, when it
// keeps to single-buffer frames. This is the limit the provider sizes its
// datagrams to without multi-buffer frames.
func TestRxFrameLen(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	bed := testbed.New(t, testbed.Options{MTU: 9000, Subnet: 60})
	var qs [2]*xdp.Queue
	for i, h := range []*testbed.Host{&bed.A, &bed.B} {
		s, err := xdp.AttachSteer(xdp.SteerConfig{Netns: h.NS, Interface: h.If, Port: testPort})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		q, err := xdp.Open(xdp.Config{Netns: h.NS, Interface: h.If, FrameSize: 2048, SingleBuffer: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := q.Close(); err != nil {
				t.Errorf("close queue: %v", err)
			}
		})
		if err := s.Register(q); err != nil {
			t.Fatal(err)
		}
		qs[i] = q
	}
	a, b := qs[0], qs[1]
	if got := b.RxFrameLen(); got != 2048-xdp.XDPPacketHeadroom {
		t.Fatalf("RxFrameLen %d", got)
	}
	flow := frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(bed.A.MAC), IP: bed.A.Addr, Port: 40000},
		Dst: frame.Endpoint{MAC: [6]byte(bed.B.MAC), IP: bed.B.Addr, Port: testPort},
	}
	ks0, err := b.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		size     int
		received bool
	}{{b.RxFrameLen(), true}, {b.RxFrameLen() + 1, false}} {
		f, ok := a.Alloc()
		if !ok {
			t.Fatal("no frame")
		}
		n := flow.Encode(a.Frame(f), c.size-frame.HeaderLen, 0)
		if n != c.size {
			t.Fatalf("encoded %d bytes, want %d", n, c.size)
		}
		if a.Transmit([]xdp.Desc{{Addr: a.Addr(f), Len: uint32(n)}}) != 1 {
			t.Fatal("tx ring full")
		}
		if err := a.Kick(); err != nil {
			t.Fatal(err)
		}
		var descs [4]xdp.Desc
		got := 0
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && got == 0; {
			a.Complete()
			if got = b.Receive(descs[:]); got == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		for _, d := range descs[:got] {
			if int(d.Len) != c.size {
				t.Errorf("received %d bytes, sent %d", d.Len, c.size)
			}
			b.Release(b.FrameOf(d))
		}
		b.Refill()
		if (got == 1) != c.received {
			t.Fatalf("%d-byte frame: received %d, want received %v", c.size, got, c.received)
		}
	}
	ks, err := b.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	if ks.RxDropped-ks0.RxDropped != 1 {
		t.Fatalf("RxDropped moved by %d, want 1: %+v", ks.RxDropped-ks0.RxDropped, ks)
	}
	for deadline := time.Now().Add(time.Second); a.TxPending() > 0 && time.Now().Before(deadline); {
		a.Complete()
		time.Sleep(time.Millisecond)
	}
}

// FrameSize defaults to 2048 up to MTU 1778, whose frames 2048 bytes still
// receive, and to 4096 above it.
func TestFrameSizeDefault(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{Subnet: 61})
	for _, c := range []struct{ mtu, size int }{{1500, 2048}, {xdp.MaxMTU2048, 2048}, {xdp.MaxMTU2048 + 1, 4096}, {9000, 4096}} {
		if err := testbed.IP("-n", bed.A.NS, "link", "set", "dev", bed.A.If, "mtu", fmt.Sprint(c.mtu)); err != nil {
			t.Fatal(err)
		}
		q, err := xdp.Open(xdp.Config{Netns: bed.A.NS, Interface: bed.A.If})
		if err != nil {
			t.Fatal(err)
		}
		if q.FrameSize() != c.size || q.Config().FrameSize != c.size {
			t.Errorf("MTU %d: frames of %d (config %d), receiving %d; want %d", c.mtu, q.FrameSize(), q.Config().FrameSize, q.RxFrameLen(), c.size)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// AttachSteer takes frags-aware native XDP where the driver gives it (veth
// at MTU 9000, where a plain program is refused), and reports why when it
// settles for less: generic mode forced, or native refused (lo).
func TestSteeringFallback(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{MTU: 9000, Subnet: 62})
	for _, c := range []struct {
		name, dev string
		mode      bpf.Mode
		want      bpf.Mode
		why       string // in Fallback; "" for none
	}{
		{"veth at 9000", bed.A.If, 0, bpf.ModeNative, ""},
		{"generic forced", bed.A.If, bpf.ModeGeneric, bpf.ModeGeneric, "forced by configuration"},
		{"lo refuses native", "lo", 0, bpf.ModeGeneric, "native mode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := xdp.AttachSteer(xdp.SteerConfig{Netns: bed.A.NS, Interface: c.dev, Port: testPort, Mode: c.mode})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			why := s.Fallback()
			if s.Mode() != c.want || !s.Frags() || (c.why == "") != (why == "") || !strings.Contains(why, c.why) {
				t.Fatalf("%v, frags-aware %v, fallback %q; want %v, frags-aware, fallback with %q", s.Mode(), s.Frags(), why, c.want, c.why)
			}
			t.Logf("%v; fallback: %q", s.Mode(), why)
		})
	}
}
