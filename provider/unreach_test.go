package provider

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// capture keeps a copy of the last datagram from one address to another
// that a memnet.Network carries, for Faults.Drop; drop, if set, decides.
type capture struct {
	mu   sync.Mutex
	from netip.Addr
	last []byte
	drop func(d []byte) bool
}

func (c *capture) fn(from, _ netip.Addr, d []byte) bool {
	if from != c.from {
		return false
	}
	c.mu.Lock()
	c.last = append(c.last[:0], d...)
	c.mu.Unlock()
	return c.drop != nil && c.drop(d)
}

func (c *capture) get() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.last...)
}

// quotedWith returns a copy of d, cut to n bytes if n > 0, with f applied.
func quotedWith(d []byte, n int, f func(q []byte)) []byte {
	q := append([]byte(nil), d...)
	if n > 0 {
		q = q[:n]
	}
	if f != nil {
		f(q)
	}
	return q
}

// TestEngineUnreachable injects ICMP port unreachables into an engine on a
// memnet.Network: one that quotes a datagram of a live connection, with its
// ids, ports and token, fails the connection at once (ECONNRESET when
// established, ECONNREFUSED while connecting), even when the quote stops
// after the token; forged or short ones change nothing and are counted.
func TestEngineUnreachable(t *testing.T) {
	tap := &capture{}
	v := newVNet(t, 7, memnet.Faults{Delay: 50 * time.Microsecond}, testEngineConfig(), 2)
	tap.from = v.addr(0)
	v.net.SetFaults(memnet.Faults{Delay: 50 * time.Microsecond, Drop: tap.fn})
	e := v.hosts[0]
	a, b := v.pair()
	sent := tap.get() // the connector's answer to the accept
	if h := (wire.Header{}); func() bool { _, err := h.Decode(sent); return err != nil }() {
		t.Fatalf("captured %d bytes that do not decode", len(sent))
	}
	inject := func(from netip.Addr, q []byte) {
		t.Helper()
		if !v.net.InjectUnreachable(from, v.addr(0), q) {
			t.Fatal("InjectUnreachable refused")
		}
		v.run(time.Second, func() bool { return v.net.Queued() == 0 })
		for v.step() {
		}
	}
	be32 := func(off int, x uint32) func(q []byte) {
		return func(q []byte) { binary.BigEndian.PutUint32(q[off:], binary.BigEndian.Uint32(q[off:])^x) }
	}
	for _, c := range []struct {
		name string
		from netip.Addr
		q    []byte
	}{
		{"wrong token", v.addr(1), quotedWith(sent, 0, be32(28, 1))},
		{"wrong token, high half", v.addr(1), quotedWith(sent, 0, be32(24, 1<<31))},
		{"wrong src conn (ours)", v.addr(1), quotedWith(sent, 0, be32(12, 1))},
		{"wrong dst conn (the peer's)", v.addr(1), quotedWith(sent, 0, be32(16, 1))},
		{"wrong src port", v.addr(1), quotedWith(sent, 0, func(q []byte) { q[9]++ })},
		{"wrong dst port", v.addr(1), quotedWith(sent, 0, func(q []byte) { q[11]++ })},
		{"wrong version", v.addr(1), quotedWith(sent, 0, func(q []byte) { q[0] = 2 })},
		{"cut before the token's end", v.addr(1), quotedWith(sent, quotedLen-1, nil)},
		{"RFC 792's minimum: nothing of the sdx header", v.addr(1), nil},
		{"from another host", netip.MustParseAddr("198.18.0.99"), quotedWith(sent, 0, nil)},
	} {
		before := e.st.dropUnreach.Load()
		inject(c.from, c.q)
		if a.state != stateEstablished {
			t.Fatalf("%s: the connection is %v (%v)", c.name, a.state, a.err)
		}
		if n := e.st.dropUnreach.Load() - before; n != 1 {
			t.Errorf("%s: Drops.Unreach moved by %d; want 1", c.name, n)
		}
	}
	if n := e.st.unreachIn.Load(); n != 0 {
		t.Fatalf("%d unreachables taken from forgeries", n)
	}

	// The real one, quoted no further than the token.
	start := v.now
	inject(v.addr(1), quotedWith(sent, quotedLen, nil))
	if a.state != stateFailed || !errors.Is(a.err, ErrConnReset) {
		t.Fatalf("after a port unreachable: %v (%v); want failed with ECONNRESET", a.state, a.err)
	}
	if d := time.Duration(v.now - start); d > time.Millisecond {
		t.Errorf("failed after %v of virtual time", d)
	}
	if n := e.st.unreachIn.Load(); n != 1 {
		t.Errorf("Unreachables %d; want 1", n)
	}
	// A second one about the failed connection only counts.
	before := e.st.dropUnreach.Load()
	inject(v.addr(1), quotedWith(sent, 0, nil))
	if e.st.dropUnreach.Load() != before+1 || e.st.unreachIn.Load() != 1 {
		t.Errorf("a late unreachable: dropped %d, taken %d", e.st.dropUnreach.Load()-before, e.st.unreachIn.Load())
	}
	_ = b

	// While connecting: the connect requests are dropped on the way, and
	// the unreachable quoting one refuses the connect.
	tap.drop = func(d []byte) bool { return len(d) > 1 && wire.Opcode(d[1]) == wire.OpConnect }
	c := v.connect(0, 1, 80)
	for v.step() {
	}
	req := tap.get()
	if len(req) < 2 || wire.Opcode(req[1]) != wire.OpConnect {
		t.Fatalf("captured %x; want a connect request", req)
	}
	inject(v.addr(1), quotedWith(req, 0, be32(24, 1)))
	if c.state != stateConnecting {
		t.Fatalf("a forged unreachable ended the connect: %v (%v)", c.state, c.err)
	}
	inject(v.addr(1), quotedWith(req, 0, nil))
	if c.state != stateFailed || !errors.Is(c.err, ErrConnRefused) {
		t.Fatalf("connect after a port unreachable: %v (%v); want failed with ECONNREFUSED", c.state, c.err)
	}
}
