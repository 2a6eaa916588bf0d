package provider

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sdx-project/sdx/provider/memnet"
)

// The halves cover the pool exactly, the receive half takes the odd
// buffer, and beyondCap is half the send half in bytes.
func TestCreditHalves(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 96, 8192, 8193} {
		c := newCredit(newBufPool(n, 64), 40)
		if c.sendCap+c.recvCap != n || c.sendCap > c.recvCap || c.recvCap > c.sendCap+1 {
			t.Errorf("pool %d: send half %d, receive half %d", n, c.sendCap, c.recvCap)
		}
		if c.beyondCap != c.sendCap/2*40 {
			t.Errorf("pool %d: beyondCap %d", n, c.beyondCap)
		}
		if c.sendHeld() != 0 || c.recvHeld() != 0 || c.uncommitted() != c.recvCap {
			t.Errorf("pool %d: a new pool holds %d+%d, %d uncommitted", n, c.sendHeld(), c.recvHeld(), c.uncommitted())
		}
	}
}

// Each half counts its own places, and only held receive buffers and
// commitments reduce what the receive half has uncommitted.
func TestCreditHeld(t *testing.T) {
	c := newCredit(newBufPool(16, 64), 40)
	take := func(pl bufPlace, k int) {
		for range k {
			if _, ok := c.pool.get(pl); !ok {
				t.Fatal("pool empty")
			}
		}
	}
	take(placeSendQueued, 2)
	take(placeInFlight, 3)
	take(placeRecvQueued, 1)
	take(placeOutOfOrder, 2)
	if c.sendHeld() != 5 || c.recvHeld() != 3 {
		t.Fatalf("held: send %d, receive %d", c.sendHeld(), c.recvHeld())
	}
	c.recvCommitted = 4
	if c.uncommitted() != 8-3-4 {
		t.Fatalf("uncommitted %d", c.uncommitted())
	}
	if !c.mayTake(5, 4) || c.mayTake(6, 4) {
		t.Fatal("in-order data may take its count plus what is uncommitted")
	}
	c.recvCommitted = 9
	if c.uncommitted() >= 0 || !c.mayTake(2, 2) || c.mayTake(3, 2) {
		t.Fatal("over-committed: in-order data may take only its own count")
	}
}

func TestCreditBuffersFor(t *testing.T) {
	c := newCredit(newBufPool(4, 100), 60)
	for _, tc := range [][2]int{{-5, 0}, {0, 0}, {1, 1}, {100, 1}, {101, 2}, {1000, 10}} {
		if got := c.buffersFor(tc[0]); got != tc[1] {
			t.Errorf("buffersFor(%d) = %d, want %d", tc[0], got, tc[1])
		}
	}
}

func TestCreditShares(t *testing.T) {
	c := newCredit(newBufPool(20, 100), 60) // receive half 10, beyondCap 5/2*60
	for _, tc := range [][2]int{{0, 10}, {1, 10}, {2, 5}, {3, 3}, {11, 0}} {
		if got := c.share(tc[0]); got != tc[1] {
			t.Errorf("share(%d) = %d, want %d", tc[0], got, tc[1])
		}
	}
	if got := c.beyondShare(1, 60); got != 300 {
		t.Errorf("beyondShare alone %d", got)
	}
	if got := c.beyondShare(100, 60); got != 60 {
		t.Errorf("beyondShare among many %d, want one segment", got)
	}
}

// commit by hand: a commitment is at most the fair share, grows only into
// what is uncommitted, and shrinks at once.
func TestCreditCommit(t *testing.T) {
	c := newCredit(newBufPool(20, 100), 60) // receive half 10
	a := c.commit(0, 8, 2)
	if a != 5 || c.recvCommitted != 5 {
		t.Fatalf("first: counted %d, committed %d; want the share, 5", a, c.recvCommitted)
	}
	b := c.commit(0, 8, 2)
	if b != 5 || c.recvCommitted != 10 {
		t.Fatalf("second: counted %d, committed %d", b, c.recvCommitted)
	}
	// A third endpoint finds the half committed: nothing to grow into.
	d := c.commit(0, 2, 3)
	if d != 0 || c.recvCommitted != 10 {
		t.Fatalf("third: counted %d, committed %d", d, c.recvCommitted)
	}
	// Held to the new share (3), the first frees room, which the third
	// takes.
	a = c.commit(a, 8, 3)
	if a != 3 || c.recvCommitted != 8 {
		t.Fatalf("trimmed: counted %d, committed %d", a, c.recvCommitted)
	}
	d = c.commit(d, 2, 3)
	if d != 2 || c.recvCommitted != 10 {
		t.Fatalf("third again: counted %d, committed %d", d, c.recvCommitted)
	}
	// Received data moves a commitment into held buffers.
	c.pool.get(placeRecvQueued)
	c.pool.get(placeRecvQueued)
	d = c.commit(d, 0, 3)
	if d != 0 || c.recvCommitted != 8 || c.uncommitted() != 0 {
		t.Fatalf("filled: counted %d, committed %d, uncommitted %d", d, c.recvCommitted, c.uncommitted())
	}
	// Among more endpoints than buffers, a window still counts one.
	c2 := newCredit(newBufPool(8, 100), 60)
	if n := c2.commit(0, 3, 100); n != 1 {
		t.Fatalf("share below one buffer: counted %d, want 1", n)
	}
}

// commit's invariants over random sequences: the total is the sum of the
// counts; a count never exceeds the need nor the fair share (at least
// one); it grows only into what was uncommitted, so growth never
// over-commits the half; and a count that shrinks is the need or the
// share, nothing less.
func TestCreditCommitInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 200 {
		c := newCredit(newBufPool(2+rng.IntN(200), 64), 40)
		counted := make([]int, 1+rng.IntN(40))
		var held []uint32
		for range 500 {
			switch rng.IntN(4) {
			case 0: // data arrives or is read
				if rng.IntN(2) == 0 && c.recvHeld() < c.recvCap {
					b, _ := c.pool.get(placeRecvQueued)
					held = append(held, b)
				} else if len(held) > 0 {
					c.pool.put(held[len(held)-1])
					held = held[:len(held)-1]
				}
				continue
			}
			i := rng.IntN(len(counted))
			nEps := len(counted) + rng.IntN(10)
			need := rng.IntN(3 * c.recvCap)
			old, u := counted[i], c.uncommitted()
			n := c.commit(old, need, nEps)
			counted[i] = n
			share := max(c.share(nEps), 1)
			switch {
			case n < 0 || n > need || n > share:
				t.Fatalf("run %d: counted %d for need %d, share %d", run, n, need, share)
			case n > old && n-old > max(u, 0):
				t.Fatalf("run %d: grew by %d with %d uncommitted", run, n-old, u)
			case n > old && c.uncommitted() < 0:
				t.Fatalf("run %d: growth over-committed the half: %d", run, c.uncommitted())
			case n < old && n != min(need, share):
				t.Fatalf("run %d: shrank from %d to %d, need %d share %d", run, old, n, need, share)
			}
			sum := 0
			for _, k := range counted {
				sum += k
			}
			if sum != c.recvCommitted {
				t.Fatalf("run %d: committed %d, counts add to %d", run, c.recvCommitted, sum)
			}
		}
	}
}

// A granted window can always be filled, and the receive half is shared
// fairly. Sixteen connections into one host whose receive half (64
// buffers) is far smaller than their windows would take at the default
// size; each receive buffer fits the fair share (3 buffers), so every
// window granted is counted in full. The readers do not read: every
// connection is granted a window, every byte of every window arrives
// (as far as full segments go) with no segment dropped for want of a buffer, and the receive half
// never holds nor promises more than it has. Then the readers read, and
// every stream completes intact.
//
// (A window granted beyond the share, while fewer endpoints shared the
// pool, is a promise without a reservation: see recommit, and
// TestEngineEarlyWindowsDoNotPinPool.)
func TestCreditGrantedWindowFills(t *testing.T) {
	const conns = 16
	cfg := testEngineConfig()
	cfg.Buffers = 128
	cfg.RecvBuffer = (cfg.Buffers / 2 / (conns + 1)) * memnet.DefaultMTU
	v := newVNet(t, 11, memnet.Faults{Delay: 20 * time.Microsecond}, cfg, 2)
	as, bs := fanIn(v, conns, 90)
	e0, e1 := v.hosts[0], v.hosts[1]
	const size = 256 << 10
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i * 7)
	}
	sent := make([]int, conns)
	write := func() {
		for i, a := range as {
			if sent[i] < size {
				n, err := e0.write(a, src[sent[i]:])
				if err != nil {
					t.Fatal(err)
				}
				sent[i] += n
			}
		}
	}
	halves := func() {
		t.Helper()
		if e1.recvHeld()+e1.recvCommitted > e1.recvCap || e0.sendHeld() > e0.sendCap {
			t.Fatalf("halves overrun: receive %d held + %d committed of %d, send %d of %d",
				e1.recvHeld(), e1.recvCommitted, e1.recvCap, e0.sendHeld(), e0.sendCap)
		}
		sum := 0
		for _, ep := range e1.eps {
			if ep != nil {
				sum += ep.rcv.counted
			}
		}
		if sum != e1.recvCommitted {
			t.Fatalf("%d committed, counts add to %d", e1.recvCommitted, sum)
		}
	}
	// Nobody reads: the windows fill, and stay full.
	deadline := v.now + int64(2*time.Second)
	for v.now < deadline {
		write()
		if !v.step() {
			v.advance()
		}
		halves()
	}
	if n := e1.st.dropNoBuffer.Load(); n != 0 {
		t.Errorf("%d segments dropped for want of a buffer within granted windows", n)
	}
	for i, b := range bs {
		if b.rcv.rcvNxt == 0 {
			t.Errorf("connection %d was granted no window", i)
		}
		// Full segments go out; the rest of a window smaller than one
		// waits for the window to grow.
		if b.rcv.lastEdge-b.rcv.rcvNxt >= uint64(b.mss) {
			t.Errorf("connection %d: granted up to %d, received up to %d", i, b.rcv.lastEdge, b.rcv.rcvNxt)
		}
	}
	// Now the readers read: every stream completes, byte for byte.
	got := make([]int, conns)
	rbuf := make([]byte, 64<<10)
	v.run(time.Minute, func() bool {
		write()
		done := true
		for i, b := range bs {
			n, err := e1.read(b, rbuf)
			if err != nil {
				t.Fatal(err)
			}
			for k := range n {
				if rbuf[k] != byte((got[i]+k)*7) {
					t.Fatalf("connection %d: byte %d corrupt", i, got[i]+k)
				}
			}
			got[i] += n
			done = done && got[i] == size
		}
		halves()
		return done
	})
	if n := e1.st.dropNoBuffer.Load(); n != 0 {
		t.Errorf("%d segments dropped for want of a buffer", n)
	}
	checkPool(t, e0)
	checkPool(t, e1)
}

// Windows granted while few connections shared the pool are larger than
// the fair share once many do. Data filling them takes the commitment it
// was counted against, no more: the receive half never grows into the
// send half, and the host can still write (it once found the pool empty
// and failed).
func TestCreditOldWindowsStayInTheirHalf(t *testing.T) {
	const conns = 16
	cfg := testEngineConfig()
	cfg.Buffers = 128 // default buffer sizes: each window far above the share
	v := newVNet(t, 13, memnet.Faults{Delay: 20 * time.Microsecond}, cfg, 2)
	as, bs := fanIn(v, conns, 91)
	e0, e1 := v.hosts[0], v.hosts[1]
	src := make([]byte, 256<<10)
	for deadline := v.now + int64(time.Second); v.now < deadline; {
		for _, a := range as {
			if _, err := e0.write(a, src); err != nil {
				t.Fatal(err)
			}
		}
		if !v.step() {
			v.advance()
		}
		if e1.recvHeld() > e1.recvCap {
			t.Fatalf("received data holds %d buffers, the receive half is %d", e1.recvHeld(), e1.recvCap)
		}
	}
	// The host whose receive half is full writes back on every
	// connection: its send half is whole.
	for _, b := range bs {
		if n, err := e1.write(b, src[:4096]); err != nil || n == 0 {
			t.Fatalf("write back: %d, %v (send half %d of %d)", n, err, e1.sendHeld(), e1.sendCap)
		}
	}
}

// fanIn connects n endpoints of host 0 to a listener on host 1's port and
// returns both ends of each connection.
func fanIn(v *vnet, n int, port uint16) (as, bs []*endpoint) {
	l := v.listen(1, port, n)
	for range n {
		a := v.dial(0, 1, port)
		v.run(time.Second, func() bool { return len(l.ln.backlog) > 0 })
		as, bs = append(as, a), append(bs, v.hosts[1].accept(l))
	}
	return as, bs
}
