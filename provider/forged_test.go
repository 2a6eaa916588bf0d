package provider

// Forged frames on the real path: a third host C on the hop's bridge, set
// to flood every frame to every port (a hub), reads the frames of a live
// connection between A and B and injects resets, data, acks and malformed
// datagrams with wrong tokens, connection ids, ports, addresses and
// sequence numbers. None of them kills or corrupts the connection, and
// each one is counted where the protocol says it is.

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/xdp"
)

// rawHost is a raw sender and reader on a testbed host: an AF_XDP queue on
// the host's interface, with the steer program handing it every sdx frame
// the interface receives, whoever it is addressed to. It sends whatever frames it is given, with any
// addresses, header and checksum, and reads what reaches it. It is owned
// by one goroutine.
type rawHost struct {
	h      *testbed.Host
	q      *xdp.Queue
	steer  *xdp.Steering
	ipID   uint16
	tx     []xdp.Desc
	rx     [64]xdp.Desc
	parsed frame.Parsed
	hdr    wire.Header
}

func newRawHost(t testing.TB, h *testbed.Host) *rawHost {
	t.Helper()
	q, err := xdp.Open(xdp.Config{Netns: h.NS, Interface: h.If})
	if err != nil {
		t.Fatalf("raw queue on %s: %v", h.NS, err)
	}
	r := &rawHost{h: h, q: q}
	t.Cleanup(func() {
		if r.steer != nil {
			r.steer.Close()
		}
		if err := r.q.Close(); err != nil {
			t.Errorf("raw queue close: %v", err)
		}
	})
	if r.steer, err = xdp.AttachSteer(xdp.SteerConfig{Netns: h.NS, Interface: h.If, Port: DefaultUDPPort, AnyAddr: true}); err != nil {
		t.Fatalf("raw steer on %s: %v", h.NS, err)
	}
	if err := r.steer.Register(q); err != nil {
		t.Fatal(err)
	}
	return r
}

// newForger makes a hopPair on subnet with a third host, C, and C's raw
// host, which forges frames. With hub, the hop repeats every frame to
// every port, so C also sees the pair's traffic.
func newForger(t testing.TB, subnet uint8, cfg Config, hub bool) (*hopPair, *rawHost) {
	t.Helper()
	hp := newHopPair(t, testbed.HopOptions{Subnet: subnet, Third: true}, cfg)
	if hub {
		if err := hp.hop.SetHub(true); err != nil {
			t.Fatal(err)
		}
	}
	return hp, newRawHost(t, &hp.hop.C)
}

// endpointOf is the sdx endpoint of a testbed host.
func endpointOf(h *testbed.Host) frame.Endpoint {
	return frame.Endpoint{MAC: [6]byte(h.MAC), IP: h.Addr, Port: DefaultUDPPort}
}

// queue builds one frame in a UMEM frame: Ethernet, IPv4 and UDP from src
// to dst, then h and payload encoded (checksum filled in), then mangle, if
// set, may change the datagram. It reports false when no UMEM frame is
// free: flush, then try again.
func (r *rawHost) queue(src, dst frame.Endpoint, h *wire.Header, payload []byte, mangle func(d []byte)) bool {
	f, ok := r.q.Alloc()
	if !ok {
		r.q.Complete()
		if f, ok = r.q.Alloc(); !ok {
			return false
		}
	}
	buf := r.q.Frame(f)
	d := buf[frame.HeaderLen:]
	copy(d[h.Len():], payload)
	n := h.Put(d, len(payload))
	if mangle != nil {
		mangle(d[:n])
	}
	flow := frame.Flow{Src: src, Dst: dst}
	r.ipID++
	l := flow.Encode(buf, n, r.ipID)
	r.tx = append(r.tx, xdp.Desc{Addr: r.q.Addr(f), Len: uint32(l)})
	return true
}

// flush puts the queued frames on the tx ring and has the kernel send
// them, waiting (a bounded time) for their completions.
func (r *rawHost) flush() error {
	deadline := time.Now().Add(2 * time.Second)
	for len(r.tx) > 0 || r.q.TxPending() > 0 {
		if len(r.tx) > 0 {
			n := r.q.Transmit(r.tx)
			r.tx = append(r.tx[:0], r.tx[n:]...)
		}
		if err := r.q.Kick(); err != nil {
			return err
		}
		r.q.Complete()
		if time.Now().After(deadline) {
			return fmt.Errorf("raw sender: %d frames queued, %d in the kernel after 2s", len(r.tx), r.q.TxPending())
		}
	}
	return nil
}

// send queues one frame and flushes.
func (r *rawHost) send(src, dst frame.Endpoint, h *wire.Header, payload []byte, mangle func([]byte)) error {
	if !r.queue(src, dst, h, payload, mangle) {
		if err := r.flush(); err != nil {
			return err
		}
		if !r.queue(src, dst, h, payload, mangle) {
			return errors.New("raw sender: no free UMEM frame")
		}
	}
	return r.flush()
}

// receive hands every sdx datagram waiting on the queue, decoded, to fn
// (nil: just drain) and returns how many frames it took.
func (r *rawHost) receive(fn func(p *frame.Parsed, h *wire.Header, payload []byte)) int {
	total := 0
	for {
		n := r.q.Receive(r.rx[:])
		for _, d := range r.rx[:n] {
			if fn != nil && frame.Parse(r.q.Data(d), &r.parsed) == nil {
				if payload, err := r.hdr.Decode(r.parsed.Payload); err == nil {
					fn(&r.parsed, &r.hdr, payload)
				}
			}
			r.q.Release(r.q.FrameOf(d))
		}
		r.q.Refill()
		total += n
		if n < len(r.rx) {
			return total
		}
	}
}

// forgery is one kind of forged frame: where it goes, what it is, and the
// counters it must move on the provider that receives it.
type forgery struct {
	name   string
	toB    bool // to B from A's address (else to A from B's)
	from   *testbed.Host
	hdr    wire.Header
	data   []byte
	mangle func([]byte)
	want   func(d DropStats, st Stats) uint64 // the counter it moves, on its receiver
}

// TestForgedFrames runs a seeded stream from A to B while C, on the same
// segment, injects forged frames into the connection in both directions:
// the stream arrives byte-exact, neither end is reset, and every forged
// frame is counted by its receiver, exactly, under the reason the
// protocol gives (docs/PROTOCOL.md, "Identity and the token").
func TestForgedFrames(t *testing.T) {
	hp, raw := newForger(t, 40, Config{}, true)
	s, r := hp.connectPair(t, hp.listen(t, 4))

	size := scaled[int64](256<<20, 16<<20)
	// The stream pauses halfway until the gate opens, so that the frames
	// forged with the right token can be counted on an idle connection.
	half, gate := make(chan struct{}), make(chan struct{})
	var written int64
	got := make(chan error, 1)
	go func() {
		n, err := recvSeeded(func(b []byte) (int, error) { return hp.b.Recv(r, b) }, 77, 64<<10)
		if err == nil && n != size {
			err = fmt.Errorf("received %d of %d bytes", n, size)
		}
		got <- err
	}()
	sent := make(chan error, 1)
	go func() {
		err := sendSeeded(func(b []byte) (int, error) {
			if written < size/2 && written+int64(len(b)) >= size/2 {
				close(half)
				<-gate
			}
			written += int64(len(b))
			return hp.a.Send(s, b)
		}, 77, size, 61<<10)
		if err == nil {
			err = hp.a.Shutdown(s)
		}
		sent <- err
	}()

	// C reads a data frame of the connection from A to B: the ids, ports
	// and token the forgeries start from.
	var seen wire.Header
	deadline := time.Now().Add(5 * time.Second)
	for seen.Op != wire.OpData {
		raw.receive(func(p *frame.Parsed, h *wire.Header, _ []byte) {
			if h.Op == wire.OpData && p.Flow.Src.IP == hp.hop.A.Addr {
				seen = *h
			}
		})
		if time.Now().After(deadline) {
			t.Fatal("C saw no data frame of the connection")
		}
	}
	t.Logf("C read: A's conn %#x port %d, B's conn %#x port %d, token %#x", seen.SrcConn, seen.SrcPort, seen.DstConn, seen.DstPort, seen.Token)
	aEnd, bEnd, cEnd := endpointOf(&hp.hop.A), endpointOf(&hp.hop.B), endpointOf(&hp.hop.C)
	cEnd.IP = hp.hop.C.Addr
	// toB is a header on the connection as A would send it, toA as B would.
	toB := wire.Header{Op: wire.OpData, Flags: wire.FlagAck, SrcPort: seen.SrcPort, DstPort: seen.DstPort,
		SrcConn: seen.SrcConn, DstConn: seen.DstConn, Token: seen.Token, Window: 1 << 20, Seq: seen.Seq}
	toA := wire.Header{Op: wire.OpData, Flags: wire.FlagAck, SrcPort: seen.DstPort, DstPort: seen.SrcPort,
		SrcConn: seen.DstConn, DstConn: seen.SrcConn, Token: seen.Token, Window: 1 << 20}
	with := func(h wire.Header, f func(h *wire.Header)) wire.Header { f(&h); return h }
	wrongToken := func(h *wire.Header) { h.Token ^= 0x9e3779b97f4a7c15 }
	badToken := func(d DropStats, _ Stats) uint64 { return d.BadToken }
	payload := make([]byte, 100)

	// Forged without the token, or with it but not from the connection's
	// peer (address, ids, ports): BadToken; for a connection id that does
	// not exist, UnknownConn. Sent while the stream runs.
	blind := []forgery{
		{name: "reset, wrong token", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op, h.Flags = wire.OpReset, 0; wrongToken(h) }), want: badToken},
		{name: "data, wrong token", toB: true, hdr: with(toB, wrongToken), data: payload, want: badToken},
		{name: "ack, wrong token", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op = wire.OpAck; h.Ack = 1 << 40; wrongToken(h) }), want: badToken},
		{name: "disconnect, wrong token", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op = wire.OpDisconnect; wrongToken(h) }), want: badToken},
		{name: "reset, token, wrong source conn id", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op, h.Flags = wire.OpReset, 0; h.SrcConn ^= 0x5a5a }), want: badToken},
		{name: "reset, token, wrong source port", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op, h.Flags = wire.OpReset, 0; h.SrcPort++ }), want: badToken},
		{name: "reset, token, wrong destination port", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op, h.Flags = wire.OpReset, 0; h.DstPort++ }), want: badToken},
		{name: "reset, token, from C's address", toB: true, from: &hp.hop.C, hdr: with(toB, func(h *wire.Header) { h.Op, h.Flags = wire.OpReset, 0 }), want: badToken},
		{name: "reset to A, wrong token", hdr: with(toA, func(h *wire.Header) { h.Op, h.Flags = wire.OpReset, 0; wrongToken(h) }), want: badToken},
		{name: "data to A, wrong token", hdr: with(toA, wrongToken), data: payload, want: badToken},
		{name: "ack to A, wrong token", hdr: with(toA, func(h *wire.Header) { h.Op = wire.OpAck; h.Ack = seen.Seq; wrongToken(h) }), want: badToken},
		{name: "reject to A, wrong token", hdr: with(toA, func(h *wire.Header) { h.Op, h.Flags = wire.OpReject, 0; wrongToken(h) }), want: badToken},
		{name: "reset, unknown conn id", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op, h.Flags = wire.OpReset, 0; h.DstConn += 1 << idBits }),
			want: func(d DropStats, _ Stats) uint64 { return d.UnknownConn }},
		{name: "data, unknown conn id, wrong token", toB: true, hdr: with(toB, func(h *wire.Header) { h.DstConn += 1 << idBits; wrongToken(h) }), data: payload,
			want: func(d DropStats, _ Stats) uint64 { return d.UnknownConn }},
		{name: "data, bad checksum", toB: true, hdr: toB, data: payload, mangle: func(d []byte) { d[len(d)-1] ^= 1 },
			want: func(d DropStats, _ Stats) uint64 { return d.Checksum }},
		{name: "data, bad version", toB: true, hdr: toB, data: payload, mangle: func(d []byte) { d[0] = 2 },
			want: func(d DropStats, _ Stats) uint64 { return d.Malformed }},
		{name: "data, length disagrees", toB: true, hdr: toB, data: payload, mangle: func(d []byte) { d[49]++ },
			want: func(d DropStats, _ Stats) uint64 { return d.Malformed }},
	}
	// Forged with the token but a sequence or ack number the connection
	// has not reached or has passed: Duplicate, OutOfWindow, BadAck. Sent
	// while the stream pauses, when nothing else moves those counters.
	// (An on-path host that reads the token can still inject data inside
	// the window, or reset the connection: the token keeps out blind
	// forgers, not readers of the wire; see docs/RELIABILITY.md.)
	sequenced := []forgery{
		{name: "data, token, below what B received", toB: true, hdr: with(toB, func(h *wire.Header) { h.Seq = 0 }), data: payload,
			want: func(d DropStats, _ Stats) uint64 { return d.Duplicate }},
		{name: "data, token, beyond B's window", toB: true, hdr: with(toB, func(h *wire.Header) { h.Seq += 1 << 40 }), data: payload,
			want: func(d DropStats, _ Stats) uint64 { return d.OutOfWindow }},
		{name: "ack, token, of data B never sent", toB: true, hdr: with(toB, func(h *wire.Header) { h.Op = wire.OpAck; h.Ack = 1 << 40 }),
			want: func(d DropStats, _ Stats) uint64 { return d.BadAck }},
		{name: "data to A, token, beyond A's window", hdr: with(toA, func(h *wire.Header) { h.Seq = 1 << 40 }), data: payload,
			want: func(d DropStats, _ Stats) uint64 { return d.OutOfWindow }},
		{name: "ack to A, token, of data A never sent", hdr: with(toA, func(h *wire.Header) { h.Op = wire.OpAck; h.Ack = 1 << 50 }),
			want: func(d DropStats, _ Stats) uint64 { return d.BadAck }},
	}
	const each = 50
	fire := func(fs []forgery) {
		t.Helper()
		for _, f := range fs {
			dst, peer := hp.a, aEnd
			src := bEnd
			if f.toB {
				dst, peer, src = hp.b, bEnd, aEnd
			}
			if f.from != nil {
				src = cEnd
			}
			src.MAC = cEnd.MAC // C's own MAC: the bridge's tables are not the point here
			before := dst.Stats()
			for range each {
				h := f.hdr
				if err := raw.send(src, peer, &h, f.data, f.mangle); err != nil {
					t.Fatalf("%s: %v", f.name, err)
				}
				raw.receive(nil) // what the hub floods to C
			}
			want := f.want(before.Drops, before) + each
			deadline := time.Now().Add(5 * time.Second)
			for {
				st := dst.Stats()
				n := f.want(st.Drops, st)
				if n == want {
					break
				}
				if n > want || time.Now().After(deadline) {
					t.Errorf("%s: counter moved by %d; want %d (drops %+v)", f.name, n-(want-each), each, st.Drops)
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	a0, b0 := hp.a.Stats(), hp.b.Stats()
	start := time.Now()
	fire(blind)
	t.Logf("%d blind forgeries, %d of each kind, in %v, while the stream ran", len(blind)*each, each, time.Since(start).Round(time.Millisecond))

	select {
	case <-half:
	case err := <-sent:
		t.Fatalf("sender ended before halfway: %v", err)
	}
	// Wait for the connection to be idle: everything sent acknowledged,
	// everything received read, the counters still.
	waitUntil(t, "the paused connection to go idle", func() bool {
		sa, sb := hp.a.Stats(), hp.b.Stats()
		time.Sleep(20 * time.Millisecond)
		sa2, sb2 := hp.a.Stats(), hp.b.Stats()
		return sa.BuffersHeld() == 0 && sb.BuffersHeld() == 0 && sa2.DatagramsIn == sa.DatagramsIn && sb2.DatagramsIn == sb.DatagramsIn
	})
	fire(sequenced)
	close(gate)

	if err := <-sent; err != nil {
		t.Fatalf("sender: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("stream under forged frames: %v", err)
	}
	a, b := hp.a.Stats(), hp.b.Stats()
	t.Logf("stream of %d MiB byte-exact in %v; A drops %+v; B drops %+v; B resets out %d",
		size>>20, time.Since(start).Round(time.Millisecond), a.Drops, b.Drops, b.ResetsOut-b0.ResetsOut)
	if a.ResetsIn != a0.ResetsIn || b.ResetsIn != b0.ResetsIn {
		t.Errorf("resets taken: A %d, B %d; want none", a.ResetsIn-a0.ResetsIn, b.ResetsIn-b0.ResetsIn)
	}
	// B answered each frame for an unknown connection, except resets,
	// with a reset carrying the forged token back to A's address, where
	// the wrong token got it counted and dropped: the reflection harms
	// nobody.
	if n := b.ResetsOut - b0.ResetsOut; n != each {
		t.Errorf("B sent %d resets; want %d, one for each forged data frame to an unknown connection", n, each)
	}
	if n := a.Drops.BadToken - a0.Drops.BadToken; n != 5*each {
		t.Errorf("A dropped %d frames for a bad token; want %d: four forged kinds and B's reflected resets", n, 5*each)
	}
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)
	checkQuiet(t, hp.a, hp.b)
}

// TestForgedGarbage sends a burst of datagrams to B's sdx port from C,
// each one broken (a flipped byte under the CRC, too many SACK blocks,
// an unknown opcode), while a stream runs: B drops and counts every one,
// and the stream arrives byte-exact.
func TestForgedGarbage(t *testing.T) {
	hp, raw := newForger(t, 41, Config{}, false)
	s, r := hp.connectPair(t, hp.listen(t, 4))
	done := make(chan error, 1)
	go func() {
		_, err := sendStream(hp.a, hp.b, s, r, 5, 8<<20)
		done <- err
	}()
	cEnd, bEnd := endpointOf(&hp.hop.C), endpointOf(&hp.hop.B)
	const n = 20000
	b0 := hp.b.Stats()
	counted := func() uint64 {
		d := hp.b.Stats().Drops
		return d.Malformed + d.Checksum - b0.Drops.Malformed - b0.Drops.Checksum
	}
	for i := range n {
		x := uint64(i+1) * 0x9e3779b97f4a7c15
		h := wire.Header{Op: wire.Opcode(x%11 + 1), Flags: uint8(x >> 40), SrcConn: uint32(x >> 8), DstConn: uint32(x >> 16),
			Token: x, Seq: x >> 3, Ack: x >> 5, SrcPort: uint16(x), DstPort: hp.portB}
		mangle := func(d []byte) {
			if i%2 == 0 {
				d[8+int(x>>20%uint64(len(d)-8))] ^= byte(x>>32) | 1
			} else {
				d[3] = byte(x>>24) | 9 // more SACK blocks than allowed
			}
		}
		for !raw.queue(cEnd, bEnd, &h, nil, mangle) {
			if err := raw.flush(); err != nil {
				t.Fatal(err)
			}
		}
		if i%32 == 31 || i == n-1 {
			if err := raw.flush(); err != nil {
				t.Fatal(err)
			}
			raw.receive(nil)
			// Paced: a burst far ahead of B's poller would be dropped by
			// the kernel (veth's ring, B's rx ring) before the provider
			// could count it.
			for deadline := time.Now().Add(time.Second); counted() < uint64(i+1) && time.Now().Before(deadline); {
				time.Sleep(10 * time.Microsecond)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("stream under garbage: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
	dropped := counted()
	b := hp.b.Stats()
	t.Logf("%d garbage datagrams sent; B: %d malformed, %d bad checksum, %d resets in", n,
		b.Drops.Malformed-b0.Drops.Malformed, b.Drops.Checksum-b0.Drops.Checksum, b.ResetsIn)
	if dropped != n {
		t.Errorf("B dropped %d of %d garbage datagrams as malformed or bad checksum", dropped, n)
	}
	if b.ResetsIn != 0 || b.RejectsOut != 0 {
		t.Errorf("B took %d resets and sent %d rejects because of garbage", b.ResetsIn, b.RejectsOut)
	}
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)
	checkQuiet(t, hp.a, hp.b)
}
