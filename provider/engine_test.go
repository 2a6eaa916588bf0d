package provider

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// vnet drives engines on a memnet.Network with a virtual clock: it steps every
// engine until nothing happens, then jumps to the next timer or delayed
// datagram. Runs are deterministic for a seed.
type vnet struct {
	t     testing.TB
	net   *memnet.Network
	now   int64
	hosts []*engine
	links []*memnet.Link
}

func newVNet(t testing.TB, seed uint64, f memnet.Faults, cfg engineConfig, nhosts int) *vnet {
	t.Helper()
	return newVNetLinks(t, seed, f, cfg, nhosts, nil)
}

// newVNetLinks is newVNet whose engine i runs on wrap(i, its link).
func newVNetLinks(t testing.TB, seed uint64, f memnet.Faults, cfg engineConfig, nhosts int, wrap func(i int, l *memnet.Link) Link) *vnet {
	t.Helper()
	mtus := make([]int, nhosts)
	for i := range mtus {
		mtus[i] = memnet.DefaultMTU
	}
	return buildVNet(t, seed, f, cfg, mtus, wrap)
}

// newVNetMTU is newVNet with one link MTU per host.
func newVNetMTU(t testing.TB, seed uint64, f memnet.Faults, cfg engineConfig, mtus ...int) *vnet {
	t.Helper()
	return buildVNet(t, seed, f, cfg, mtus, nil)
}

// buildVNet makes a vnet of one host per entry of mtus, host i's engine
// on wrap(i, its link) if wrap is not nil.
func buildVNet(t testing.TB, seed uint64, f memnet.Faults, cfg engineConfig, mtus []int, wrap func(i int, l *memnet.Link) Link) *vnet {
	t.Helper()
	v := &vnet{t: t, net: memnet.New(seed)}
	v.net.SetClock(func() time.Duration { return time.Duration(v.now) })
	v.net.SetFaults(f)
	for i, mtu := range mtus {
		v.net.SetMTU(mtu)
		l, err := v.net.NewLink()
		if err != nil {
			t.Fatal(err)
		}
		var link Link = l
		if wrap != nil {
			link = wrap(i, l)
		}
		e, err := newEngine(link, cfg, [32]byte{byte(seed), byte(seed >> 8), byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		v.hosts = append(v.hosts, e)
		v.links = append(v.links, l)
	}
	return v
}

// step polls every engine once at the current time, dropping the events
// meant for the SPI, and reports whether anything happened.
func (v *vnet) step() bool {
	any := false
	for _, e := range v.hosts {
		if e.poll(v.now) {
			any = true
		}
		for _, ep := range e.changed {
			ep.changedQ, ep.ev = false, 0
		}
		clear(e.changed)
		e.changed = e.changed[:0]
	}
	return any
}

// advance moves the clock to the next timer or delivery.
func (v *vnet) advance() {
	next := int64(1<<62 - 1)
	for _, e := range v.hosts {
		if t, ok := e.nextTimer(); ok && t < next {
			next = t
		}
	}
	if d, ok := v.net.NextDelivery(); ok && int64(d) < next {
		next = int64(d)
	}
	v.now = max(v.now+1, next)
}

// run steps until cond holds; it fails the test if that takes more than
// limit of virtual time.
func (v *vnet) run(limit time.Duration, cond func() bool) {
	v.t.Helper()
	deadline := v.now + int64(limit)
	for !cond() {
		if v.now > deadline {
			v.t.Fatalf("condition not met within %v of virtual time", limit)
		}
		if !v.step() {
			v.advance()
		}
	}
}

func (v *vnet) addr(i int) netip.Addr { return v.links[i].LocalAddr() }

// listen makes host i listen on port.
func (v *vnet) listen(i int, port uint16, backlog int) *endpoint {
	v.t.Helper()
	e := v.hosts[i]
	l, err := e.newEndpoint()
	if err != nil {
		v.t.Fatal(err)
	}
	if err := e.bind(l, port); err != nil {
		v.t.Fatal(err)
	}
	if err := e.listen(l, backlog); err != nil {
		v.t.Fatal(err)
	}
	return l
}

// dial connects host i to host j's port and waits for the outcome.
func (v *vnet) dial(i, j int, port uint16) *endpoint {
	v.t.Helper()
	c := v.connect(i, j, port)
	v.run(time.Minute, func() bool { return c.state != stateConnecting })
	return c
}

// connect starts a connect from host i to host j's port, at the current
// time, and returns the connecting endpoint.
func (v *vnet) connect(i, j int, port uint16) *endpoint {
	v.t.Helper()
	e := v.hosts[i]
	c, err := e.newEndpoint()
	if err != nil {
		v.t.Fatal(err)
	}
	e.now = v.now
	if err := e.connect(c, netip.AddrPortFrom(v.addr(j), port)); err != nil {
		v.t.Fatal(err)
	}
	return c
}

// pair returns a connection from host 0 to host 1 and its accepted end.
func (v *vnet) pair() (a, b *endpoint) {
	v.t.Helper()
	l := v.listen(1, 80, 16)
	a = v.dial(0, 1, 80)
	if a.state != stateEstablished {
		v.t.Fatalf("connect: %v %v", a.state, a.err)
	}
	v.run(time.Minute, func() bool { return len(l.ln.backlog) > 0 })
	b = v.hosts[1].accept(l)
	return a, b
}

func testEngineConfig() engineConfig {
	c := defaultEngineConfig()
	c.MaxConns = 64
	c.Buffers = 2048
	return c
}

func checkPool(t testing.TB, e *engine) {
	t.Helper()
	var sum int64
	for pl := range numBufPlaces {
		sum += e.pool.count(pl)
	}
	if sum != int64(e.pool.total()) || e.pool.count(placeFree) != int64(e.pool.nfree()) {
		t.Fatalf("pool accounting: places add to %d of %d, free %d/%d", sum, e.pool.total(), e.pool.count(placeFree), e.pool.nfree())
	}
}

func TestEngineHandshake(t *testing.T) {
	v := newVNet(t, 1, memnet.Faults{Delay: 50 * time.Microsecond}, testEngineConfig(), 2)
	start := v.now
	a, b := v.pair()
	if a.peerID != b.id || b.peerID != a.id || a.token != b.token || a.token == 0 {
		t.Fatalf("ids %x/%x %x/%x tokens %x %x", a.id, b.peerID, b.id, a.peerID, a.token, b.token)
	}
	if a.raddr != v.addr(1) || a.rport != 80 || b.raddr != v.addr(0) || b.rport != a.lport || b.lport != 80 {
		t.Fatalf("names: %v:%d -> %v:%d", b.raddr, b.rport, a.raddr, a.rport)
	}
	if a.lport < ephemeralLo {
		t.Fatalf("ephemeral port %d", a.lport)
	}
	if d := time.Duration(v.now - start); d > time.Millisecond {
		t.Fatalf("handshake took %v of virtual time with a 50µs delay", d)
	}
	// The first connect's round trip is an RTT sample.
	if a.snd.rtt.srtt != int64(100*time.Microsecond) {
		t.Fatalf("srtt %v after the handshake", time.Duration(a.snd.rtt.srtt))
	}
}

func TestEngineHandshakeLossy(t *testing.T) {
	for seed := range uint64(20) {
		v := newVNet(t, seed, memnet.Faults{Loss: 0.3, Dup: 0.3, Reorder: 0.3}, testEngineConfig(), 2)
		a, b := v.pair()
		if a.state != stateEstablished || b.state != stateEstablished {
			t.Fatalf("seed %d: %v %v", seed, a.state, b.state)
		}
		// Duplicated connect requests opened no second connection.
		v.run(time.Second, func() bool { return v.net.Queued() == 0 })
		if n := v.hosts[1].nEps; n != 2 {
			t.Fatalf("seed %d: %d endpoints at the acceptor, want listener + 1", seed, n)
		}
	}
}

func TestEngineRefused(t *testing.T) {
	cfg := testEngineConfig()
	v := newVNet(t, 1, memnet.Faults{Delay: 50 * time.Microsecond}, cfg, 2)
	start := v.now
	c := v.dial(0, 1, 81)
	if c.state != stateFailed || !errors.Is(c.err, ErrConnRefused) {
		t.Fatalf("no listener: %v %v", c.state, c.err)
	}
	if d := time.Duration(v.now - start); d > 200*time.Microsecond {
		t.Fatalf("refusal took %v", d)
	}

	l := v.listen(1, 80, 1)
	if c := v.dial(0, 1, 80); c.state != stateEstablished {
		t.Fatalf("first connect: %v", c.err)
	}
	start = v.now
	c = v.dial(0, 1, 80)
	if !errors.Is(c.err, ErrConnRefused) {
		t.Fatalf("backlog full: %v %v", c.state, c.err)
	}
	if d := time.Duration(v.now - start); d > 200*time.Microsecond {
		t.Fatalf("refusal took %v", d)
	}
	if len(l.ln.backlog) != 1 || v.hosts[1].st.rejectsOut.Load() != 2 {
		t.Fatalf("backlog %d, rejects %d", len(l.ln.backlog), v.hosts[1].st.rejectsOut.Load())
	}
	// An accept makes room.
	v.hosts[1].accept(l)
	if c := v.dial(0, 1, 80); c.state != stateEstablished {
		t.Fatalf("after accept: %v", c.err)
	}
}

func TestEngineAddrInUse(t *testing.T) {
	v := newVNet(t, 1, memnet.Faults{}, testEngineConfig(), 1)
	e := v.hosts[0]
	a, _ := e.newEndpoint()
	b, _ := e.newEndpoint()
	if err := e.bind(a, 80); err != nil {
		t.Fatal(err)
	}
	if err := e.bind(b, 80); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second bind: %v", err)
	}
	if err := e.bind(a, 81); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rebind: %v", err)
	}
	e.abort(a)
	if err := e.bind(b, 80); err != nil {
		t.Fatalf("bind after close: %v", err)
	}
}

// flow is one direction of a seeded stream between two engines of a
// vnet: seed's bytes written at src and checked as they are read at dst.
type flow struct {
	se, re   *engine
	src, dst *endpoint
	gen      *rand.ChaCha8
	recv     *streamCheck
	pending  []byte
	chunk    []byte
	size     int
	sent     int
	doneAt   int64 // virtual time the last byte was read; 0 until then
}

func newFlow(se, re *engine, src, dst *endpoint, seed uint64, size int) *flow {
	return &flow{se: se, re: re, src: src, dst: dst, gen: seedStream(seed), recv: newStreamCheck(seed),
		chunk: make([]byte, 1<<16), size: size}
}

// got is how many bytes dst has read.
func (f *flow) got() int { return int(f.recv.n) }

// pump writes at src what its send buffer takes and reads at dst what
// has arrived, checking it. It returns whether all size bytes are read.
func (f *flow) pump(t testing.TB, v *vnet, rbuf []byte) bool {
	t.Helper()
	for f.sent < f.size {
		if len(f.pending) == 0 {
			f.pending = f.chunk[:min(len(f.chunk), f.size-f.sent)]
			f.gen.Read(f.pending)
		}
		n, err := f.se.write(f.src, f.pending)
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		if n == 0 {
			break
		}
		f.pending = f.pending[n:]
		f.sent += n
	}
	for {
		n, err := f.re.read(f.dst, rbuf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if n == 0 {
			break
		}
		if err := f.recv.check(rbuf[:n]); err != nil {
			t.Fatalf("flow from port %v: %v", f.src.lport, err)
		}
	}
	if f.got() >= f.size && f.doneAt == 0 {
		f.doneAt = v.now
	}
	return f.got() >= f.size
}

// runFlows pumps flows and runs v until every flow is through, failing t
// after limit of virtual time.
func runFlows(t testing.TB, v *vnet, flows []*flow, limit time.Duration) {
	t.Helper()
	start := v.now
	rbuf := make([]byte, 1<<16)
	for done := false; !done; {
		done = true
		for _, f := range flows {
			done = f.pump(t, v, rbuf) && done
		}
		// A step after the last read too: callers see the state after it.
		if !v.step() {
			v.advance()
		}
		if time.Duration(v.now-start) > limit {
			t.Fatalf("flows stalled after %v of virtual time: %d/%d bytes of the first", limit, flows[0].got(), flows[0].size)
		}
	}
	for _, f := range flows {
		if f.got() != f.size {
			t.Fatalf("%d bytes received, want %d", f.got(), f.size)
		}
	}
}

// transfer sends size seeded bytes from a to b (and, if both, the same
// amount from b to a), checking every byte. It returns the virtual time
// it took.
func transfer(t testing.TB, v *vnet, a, b *endpoint, size int, seed uint64, both bool) time.Duration {
	t.Helper()
	start := v.now
	flows := []*flow{newFlow(v.hosts[0], v.hosts[1], a, b, seed, size)}
	if both {
		flows = append(flows, newFlow(v.hosts[1], v.hosts[0], b, a, seed+1, size))
	}
	runFlows(t, v, flows, time.Hour)
	return time.Duration(v.now - start)
}

func TestEngineStream(t *testing.T) {
	size := scaled(256<<20, 32<<20)
	if testing.Short() {
		size = 4 << 20
	}
	for _, p := range []float64{0, 0.01, 0.05} {
		t.Run(fmt.Sprintf("loss=%v", p), func(t *testing.T) {
			v := newVNet(t, 42, memnet.Faults{Loss: p, Dup: p, Reorder: p, Delay: 20 * time.Microsecond}, testEngineConfig(), 2)
			a, b := v.pair()
			start := time.Now()
			vt := transfer(t, v, a, b, size, 42, false)
			e0, e1 := v.hosts[0], v.hosts[1]
			t.Logf("%d MiB in %v virtual, %v real; retransmits %d (fast %d, rto %d), duplicates dropped %d",
				size>>20, vt, time.Since(start).Round(time.Millisecond), e0.st.retransmits.Load(),
				e0.st.fastRetransmits.Load(), e0.st.rtoExpiries.Load(), e1.st.dropDuplicate.Load())
			if p > 0 && e0.st.retransmits.Load() == 0 {
				t.Fatal("no retransmissions at a lossy link")
			}
			checkPool(t, e0)
			checkPool(t, e1)
		})
	}
}

func TestEngineStreamBothWays(t *testing.T) {
	size := 16 << 20
	if testing.Short() {
		size = 1 << 20
	}
	v := newVNet(t, 3, memnet.Faults{Loss: 0.02, Dup: 0.02, Reorder: 0.02, Corrupt: 0.01}, testEngineConfig(), 2)
	a, b := v.pair()
	transfer(t, v, a, b, size, 3, true)
	if v.hosts[0].st.dropChecksum.Load()+v.hosts[1].st.dropChecksum.Load() == 0 {
		t.Fatal("no corrupted datagram was caught")
	}
}

// A slow reader stalls its sender: memory stays within the buffers and
// nothing is lost.
func TestEngineSlowReader(t *testing.T) {
	cfg := testEngineConfig()
	cfg.SendBuffer = 64 << 10
	cfg.RecvBuffer = 32 << 10
	v := newVNet(t, 5, memnet.Faults{Loss: 0.01}, cfg, 2)
	a, b := v.pair()
	e0, e1 := v.hosts[0], v.hosts[1]
	size := 2 << 20
	if testing.Short() {
		size = 256 << 10
	}
	src := make([]byte, size)
	seedStream(5).Read(src)
	var got []byte
	sent := 0
	buf := make([]byte, 1000)
	maxHeld := [2]int64{}
	for len(got) < size {
		if sent < size {
			n, err := e0.write(a, src[sent:])
			if err != nil {
				t.Fatal(err)
			}
			sent += n
		}
		// Read 1000 bytes every millisecond: 1 MB/s.
		if n, _ := e1.read(b, buf); n > 0 {
			got = append(got, buf[:n]...)
		}
		v.step()
		v.now += int64(time.Millisecond)
		for i, e := range v.hosts {
			maxHeld[i] = max(maxHeld[i], int64(e.pool.total()-e.pool.nfree()))
		}
		if int(a.snd.sndEnd-a.snd.sndUna) > cfg.SendBuffer || b.rcv.rqBytes > cfg.RecvBuffer {
			t.Fatalf("over the buffers: %d unacked, %d unread", a.snd.sndEnd-a.snd.sndUna, b.rcv.rqBytes)
		}
	}
	if !bytes.Equal(got, src) {
		t.Fatal("data differs")
	}
	bound := func(bytes int) int64 { return int64(bytes/e0.mss + 3) }
	if maxHeld[0] > bound(cfg.SendBuffer) || maxHeld[1] > 2*bound(cfg.RecvBuffer) {
		t.Fatalf("buffers held: sender %d, receiver %d", maxHeld[0], maxHeld[1])
	}
	t.Logf("buffers held at most: sender %d, receiver %d; probes %d", maxHeld[0], maxHeld[1], e0.st.probesOut.Load())
}

func TestEngineDeadPeer(t *testing.T) {
	cfg := testEngineConfig()
	cfg.Timeout = 2 * time.Second
	for _, withData := range []bool{false, true} {
		v := newVNet(t, 9, memnet.Faults{}, cfg, 2)
		a, _ := v.pair()
		v.run(time.Second, func() bool { return v.net.Queued() == 0 })
		v.step()
		v.net.Partition(v.addr(0), v.addr(1), true)
		start := v.now
		if withData {
			v.hosts[0].write(a, make([]byte, 100<<10))
		}
		v.run(time.Minute, func() bool { return a.state == stateFailed })
		d := time.Duration(v.now - start)
		if !errors.Is(a.err, ErrTimedOut) || d > cfg.Timeout {
			t.Fatalf("data %v: %v after %v, want ETIMEDOUT within %v", withData, a.err, d, cfg.Timeout)
		}
		if !withData && v.hosts[0].st.probesOut.Load() == 0 {
			t.Fatal("no keepalive probe")
		}
		checkPool(t, v.hosts[0])
		if n := v.hosts[0].pool.nfree(); n != v.hosts[0].pool.total() {
			t.Fatalf("%d buffers held after the failure", v.hosts[0].pool.total()-n)
		}
	}
	// A connect to an address with no host times out within the bound.
	v := newVNet(t, 9, memnet.Faults{}, cfg, 1)
	start := v.now
	c, _ := v.hosts[0].newEndpoint()
	v.hosts[0].connect(c, netip.AddrPortFrom(netip.MustParseAddr("198.18.0.99"), 80))
	v.run(time.Minute, func() bool { return c.state == stateFailed })
	if d := time.Duration(v.now - start); !errors.Is(c.err, ErrTimedOut) || d > cfg.Timeout {
		t.Fatalf("connect to nobody: %v after %v", c.err, d)
	}
}

func TestEngineKeepaliveKeepsIdleConnection(t *testing.T) {
	cfg := testEngineConfig()
	cfg.Timeout = time.Second
	v := newVNet(t, 9, memnet.Faults{}, cfg, 2)
	a, b := v.pair()
	target := v.now + int64(10*time.Second)
	v.run(time.Minute, func() bool { return v.now >= target })
	if a.state != stateEstablished || b.state != stateEstablished {
		t.Fatalf("idle connection died: %v %v", a.err, b.err)
	}
	if v.hosts[0].st.probesOut.Load() < 5 {
		t.Fatalf("%d probes in 10 s", v.hosts[0].st.probesOut.Load())
	}
}

func TestEngineReset(t *testing.T) {
	for _, dropFirst := range []bool{false, true} {
		v := newVNet(t, 11, memnet.Faults{}, testEngineConfig(), 2)
		dropped := 0
		if dropFirst {
			v.net.SetFaults(memnet.Faults{Drop: func(_, _ netip.Addr, d []byte) bool {
				if wire.Opcode(d[1]) == wire.OpReset && dropped == 0 {
					dropped++
					return true
				}
				return false
			}})
		}
		a, b := v.pair()
		// Quiet first: the acceptor's window update is on its way.
		v.run(time.Second, func() bool { return v.net.Queued() == 0 })
		if err := v.hosts[0].abort(a); err != nil {
			t.Fatal(err)
		}
		v.run(time.Second, func() bool { return v.net.Queued() == 0 })
		v.step()
		if dropFirst {
			if dropped != 1 || b.state != stateEstablished {
				t.Fatalf("reset not dropped: %d %v", dropped, b.state)
			}
			// The peer's next frame is answered with a reset.
			v.hosts[1].write(b, []byte("anyone there?"))
		}
		v.run(time.Second, func() bool { return b.state == stateFailed })
		if !errors.Is(b.err, ErrConnReset) {
			t.Fatalf("drop %v: %v", dropFirst, b.err)
		}
		if n, err := v.hosts[1].read(b, make([]byte, 10)); n != 0 || !errors.Is(err, ErrConnReset) {
			t.Fatalf("read after reset: %d %v", n, err)
		}
		checkPool(t, v.hosts[1])
	}
}

func TestEngineForgedFramesDropped(t *testing.T) {
	v := newVNet(t, 13, memnet.Faults{}, testEngineConfig(), 2)
	a, b := v.pair()
	e1 := v.hosts[1]
	forge := func(op wire.Opcode, token uint64, from netip.Addr) {
		h := wire.Header{Op: op, Flags: wire.FlagAck, SrcPort: a.lport, DstPort: b.lport, SrcConn: a.id, DstConn: b.id, Token: token, Seq: 0, Ack: 0}
		e1.input(from, wire.AppendDatagram(nil, &h, []byte("forged")))
	}
	forge(wire.OpReset, a.token^1, v.addr(0))
	forge(wire.OpData, a.token+1, v.addr(0))
	forge(wire.OpReset, a.token, netip.MustParseAddr("198.18.0.77"))
	if b.state != stateEstablished || e1.st.dropBadToken.Load() != 3 {
		t.Fatalf("forged frames: state %v, counted %d", b.state, e1.st.dropBadToken.Load())
	}
	if b.rcv.rqBytes != 0 {
		t.Fatal("forged data was queued")
	}
	// A malformed frame is counted, not obeyed.
	e1.input(v.addr(0), []byte{1, 6, 0})
	if e1.st.dropMalformed.Load() != 1 {
		t.Fatal("malformed frame not counted")
	}
	// The connection still works.
	transfer(t, v, a, b, 100000, 1, true)
}

// Losing one data segment in the middle of a window is repaired by
// SACK-driven fast retransmit, without waiting for the timer.
func TestEngineFastRetransmit(t *testing.T) {
	cfg := testEngineConfig()
	cfg.MinRTO = 50 * time.Millisecond
	cfg.InitialRTO = 50 * time.Millisecond
	v := newVNet(t, 17, memnet.Faults{Delay: 10 * time.Microsecond}, cfg, 2)
	a, b := v.pair()
	dropped := false
	v.net.SetFaults(memnet.Faults{Delay: 10 * time.Microsecond, Drop: func(_, _ netip.Addr, d []byte) bool {
		var h wire.Header
		if _, err := h.Decode(d); err == nil && h.Op == wire.OpData && h.Seq == 10*uint64(v.hosts[0].mss) && !dropped {
			dropped = true
			return true
		}
		return false
	}})
	d := transfer(t, v, a, b, 64*v.hosts[0].mss, 1, false)
	e0 := v.hosts[0]
	if !dropped || e0.st.fastRetransmits.Load() != 1 || e0.st.retransmits.Load() != 1 || e0.st.rtoExpiries.Load() != 0 {
		t.Fatalf("dropped %v; fast %d, retransmits %d, rto %d", dropped, e0.st.fastRetransmits.Load(),
			e0.st.retransmits.Load(), e0.st.rtoExpiries.Load())
	}
	if d >= cfg.MinRTO {
		t.Fatalf("recovery took %v, no faster than the timer", d)
	}
}

// readToEOF reads everything b receives on e until the end of stream.
func readToEOF(t testing.TB, v *vnet, e *engine, b *endpoint) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	v.run(time.Minute, func() bool {
		n, err := e.read(b, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		return n == 0 && b.rcv.eof
	})
	return got
}

func TestEngineShutdownEOF(t *testing.T) {
	v := newVNet(t, 19, memnet.Faults{Loss: 0.1, Reorder: 0.1}, testEngineConfig(), 2)
	a, b := v.pair()
	e0, e1 := v.hosts[0], v.hosts[1]
	msg := bytes.Repeat([]byte("sdx"), 3000)
	e0.write(a, msg)
	if err := e0.shutdown(a); err != nil {
		t.Fatal(err)
	}
	if _, err := e0.write(a, msg); !errors.Is(err, ErrShutdown) {
		t.Fatalf("write after shutdown: %v", err)
	}
	got := readToEOF(t, v, e1, b)
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes before end of stream, want %d", len(got), len(msg))
	}
	v.run(time.Minute, func() bool { return a.snd.finAcked })
	// The other direction still works.
	e1.write(b, []byte("reply"))
	buf := make([]byte, 16)
	v.run(time.Minute, func() bool { n, _ := e0.read(a, buf); return n == 5 })
}

func TestStateString(t *testing.T) {
	for s := range numStates {
		if s.String() == "" || s.String()[0] == 'S' {
			t.Errorf("state %d: %q", s, s.String())
		}
	}
	if epState(99).String() != "epState(99)" {
		t.Error(epState(99).String())
	}
	if !stateHalfOpen.isConnection() || stateFailed.isConnection() || !stateFailed.hasPeer() || stateBound.hasPeer() ||
		stateClosed.hasPort() || !stateHalfOpen.synchronized() || stateConnecting.synchronized() {
		t.Error("predicates")
	}
}

// With a pool too small for the windows, the windows granted shrink to
// what the receive half of the pool can back, and data held beyond holes
// takes only buffers no window counts on, so it cannot starve the
// segments that fill the holes. Both directions at once, with loss: the
// stream completes, and at no point did the commitments exceed the half.
func TestEngineTinyPool(t *testing.T) {
	cfg := testEngineConfig()
	cfg.Buffers = 96
	v := newVNet(t, 5, memnet.Faults{Loss: 0.05, Reorder: 0.05, Delay: 10 * time.Microsecond}, cfg, 2)
	a, b := v.pair()
	size := 8 << 20
	if testing.Short() {
		size = 1 << 20
	}
	transfer(t, v, a, b, size, 5, true)
	e0, e1 := v.hosts[0], v.hosts[1]
	for _, e := range []*engine{e0, e1} {
		if e.recvHeld()+e.recvCommitted > e.recvCap || e.sendHeld() > e.sendCap {
			t.Errorf("receive half %d held + %d committed of %d; send half %d of %d",
				e.recvHeld(), e.recvCommitted, e.recvCap, e.sendHeld(), e.sendCap)
		}
	}
	checkPool(t, e0)
	checkPool(t, e1)
}

// With every pure ack lost, acks still reach the sender: on data frames
// going the other way, and, when the receiver sees the sender repeat
// itself (its acks are not getting through), on a probe, which carries the
// ack too. An echo, whose tail has no data going back, completes.
func TestEngineAcksLost(t *testing.T) {
	v := newVNet(t, 31, memnet.Faults{Drop: wire.DropOpcodes(wire.OpAck), Delay: 10 * time.Microsecond}, testEngineConfig(), 2)
	a, b := v.pair()
	size := 4 << 20
	if testing.Short() {
		size = 512 << 10
	}
	d := transfer(t, v, a, b, size, 31, false)
	// And the end of the stream is acknowledged.
	if err := v.hosts[0].shutdown(a); err != nil {
		t.Fatal(err)
	}
	v.run(time.Minute, func() bool { return a.snd.finAcked })
	t.Logf("%d KiB in %v virtual with every pure ack dropped; probes %d", size>>10, d, v.hosts[1].st.probesOut.Load())
}

// A disconnect while the send ring is full of small segments in flight
// is taken at once: it follows the data when an ack frees a slot, never
// an ENOBUFS for the caller to retry.
func TestEngineShutdownFullRing(t *testing.T) {
	cfg := testEngineConfig()
	cfg.SendBuffer = 8 << 10
	v := newVNet(t, 23, memnet.Faults{}, cfg, 2)
	a, b := v.pair()
	e0, e1 := v.hosts[0], v.hosts[1]
	v.net.Partition(v.addr(0), v.addr(1), true)
	var sent []byte
	for i := 0; !a.snd.full(); i++ {
		if i > 100000 {
			t.Fatalf("the ring never filled: %d segments of %d", a.snd.slen, len(a.snd.segs))
		}
		// One byte a segment: marked as sent (lost on the cut path), a
		// segment is not filled up, so the next byte takes a new one.
		if _, err := e0.write(a, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, byte(i))
		a.snd.sent = a.snd.slen
		a.snd.sndNxt = a.snd.sndEnd
	}
	if err := e0.shutdown(a); err != nil {
		t.Fatalf("shutdown with a full ring: %v, want it taken", err)
	}
	if _, err := e0.write(a, []byte("more")); !errors.Is(err, ErrShutdown) {
		t.Fatalf("write after shutdown: %v", err)
	}
	v.net.Partition(v.addr(0), v.addr(1), false)
	got := readToEOF(t, v, e1, b)
	if !bytes.Equal(got, sent) {
		t.Fatalf("got %d bytes before end of stream, want %d", len(got), len(sent))
	}
	v.run(time.Minute, func() bool { return a.snd.finAcked })
}
