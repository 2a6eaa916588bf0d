package provider

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/ring"
)

// Verb names the operation a Completion reports.
type Verb uint8

const (
	VerbSend Verb = iota + 1
	VerbRecv
	VerbAccept
	VerbConnect
)

var verbNames = [...]string{"", "send", "recv", "accept", "connect"}

func (v Verb) String() string {
	if int(v) < len(verbNames) && v > 0 {
		return verbNames[v]
	}
	return "Verb(?)"
}

// Completion is the result of a posted operation.
type Completion struct {
	Socket   Socket         // the descriptor the operation was posted on
	Verb     Verb           // what it was
	Context  uint64         // the caller's value from the post
	Bytes    int            // bytes sent or received
	Err      error          // nil, or one of the sentinels of errors.go (ErrAborted when closed)
	Accepted Socket         // VerbAccept: the new connection's descriptor
	Peer     netip.AddrPort // VerbAccept: its peer
}

// CompletionQueue receives the completions of operations posted with it,
// like an I/O completion port. The poller produces; one goroutine at a
// time may consume (Poll, Wait). Posting reserves a slot, so the queue
// never overflows: a post fails with ENOBUFS when every slot is taken by
// operations pending or completions not yet reaped.
type CompletionQueue struct {
	p        *Provider
	r        *ring.SPSC[Completion]
	reserved atomic.Int64 // slots promised to posted operations and unreaped completions
	waiting  atomic.Bool
	wake     chan struct{}
	rw       roleWait // a waiter's place among those wanting the poller role; signals wake
	notify   func(Completion)
}

// NewCompletionQueue returns a queue of size slots (a power of two). If
// notify is not nil it is called on the poller right after each
// completion is queued; it must return quickly and must not call blocking
// verbs (posting is fine).
func (p *Provider) NewCompletionQueue(size int, notify func(Completion)) (*CompletionQueue, error) {
	r, err := ring.NewSPSC[Completion](size)
	if err != nil {
		return nil, configErr("completion queue size %d: %v", size, err)
	}
	q := &CompletionQueue{p: p, r: r, wake: make(chan struct{}, 1), notify: notify}
	q.rw.ch = q.wake
	p.cqMu.Lock()
	p.cqs = append(p.cqs, q)
	p.cqMu.Unlock()
	return q, nil
}

func (q *CompletionQueue) reserve() bool {
	if q.reserved.Add(1) > int64(q.r.Cap()) {
		q.reserved.Add(-1)
		return false
	}
	return true
}

// push queues c; only the poller calls it, and a slot was reserved.
func (q *CompletionQueue) push(c Completion) {
	if !q.r.Push(c) {
		panic("provider: completion queue overflow despite reservation")
	}
	if q.waiting.Load() {
		q.p.role.yield = true // the goroutine we wake needs a CPU
		q.signal()
	}
	if q.notify != nil {
		q.notify(c)
	}
}

func (q *CompletionQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Poll moves up to len(out) completions into out without blocking and
// returns how many.
func (q *CompletionQueue) Poll(out []Completion) int {
	n := 0
	for n < len(out) {
		c, ok := q.r.Pop()
		if !ok {
			break
		}
		out[n] = c
		n++
	}
	if n > 0 {
		q.reserved.Add(int64(-n))
	}
	return n
}

// Len returns how many completions wait to be reaped.
func (q *CompletionQueue) Len() int { return q.r.Len() }

// Wait is Poll that blocks until at least one completion is there or
// timeout passes (a negative timeout waits for ever). While it waits it
// may run the poller itself (adaptive mode). It returns ErrNetDown once
// the provider is cleaned up and the queue is empty.
func (q *CompletionQueue) Wait(out []Completion, timeout time.Duration) (int, error) {
	if n := q.Poll(out); n > 0 || len(out) == 0 {
		return n, nil
	}
	var deadline int64
	if timeout >= 0 {
		deadline = later(q.p.nanotime(), int64(timeout)) // math.MaxInt64 is "for ever", not the past
	}
	q.p.await(q, deadline)
	n := q.Poll(out)
	if n == 0 && q.p.closed.Load() {
		return 0, ErrNetDown
	}
	return n, nil
}

// waitable implementation.
func (q *CompletionQueue) ready() bool         { return q.r.Len() > 0 || q.p.cleaned.Load() }
func (q *CompletionQueue) roleWait() *roleWait { return &q.rw }
func (q *CompletionQueue) streaming() bool     { return false }
func (q *CompletionQueue) park(timeout time.Duration) {
	q.waiting.Store(true)
	if !q.ready() {
		q.p.parkOn(q.wake, timeout)
	}
	q.waiting.Store(false)
}

// opKind is what an op asks the poller to do.
type opKind uint8

const (
	opSocket opKind = iota + 1
	opBind
	opListen
	opConnect
	opAccept
	opSend
	opRecv
	opShutdown
	opDup
	opClose
	opEventSelect
	opGetName
	opConnInfo
	opCancel   // withdraw target, a pending direct op
	opWaitEnd  // complete when the connection's end matches arg (End bits)
	opSnapshot // fill snap with every connection's figures (snapshot.go)
	opPeerGone // fail the connections to addr's incarnation ctx (PeerGone)
)

// op is one request to the poller: a verb's arguments, its progress while
// pending, and its result. Ops come from a bounded pool. Fields are
// written by the submitting goroutine before submission and by the poller
// after it; done hands them back.
type op struct {
	kind   opKind
	s      Socket
	buf    []byte
	addr   netip.AddrPort
	arg    int
	ctx    uint64
	cq     *CompletionQueue
	sock   *socket // the socket, resolved while the descriptor was live (opClose, and the overlapped verbs)
	evFn   func(Socket, Event, error)
	evSet  Event
	intr   *Waiter      // direct verbs: a wake makes the op ready to withdraw
	target *op          // opCancel: the op to withdraw
	snap   *[]ConnStats // opSnapshot: where the figures go

	// Poller-owned while pending.
	progress  int
	next      *op
	completed bool

	// Results.
	n           int
	err         error
	res         Socket
	local, peer netip.AddrPort
	info        ConnInfo

	// Hand-back to a blocking caller.
	done    atomic.Bool
	waiting atomic.Bool
	wake    chan struct{}
	rw      roleWait    // the caller's place among those wanting the poller role; signals wake
	timer   *time.Timer // the parked caller's, kept with the op so parking allocates once

	// Pool.
	idx      uint32
	freeNext atomic.Uint32
	heap     bool // allocated outside the pool (CloseSocket when the pool is empty)
}

func (o *op) ready() bool         { return o.done.Load() || o.intr != nil && o.intr.woken.Load() }
func (o *op) roleWait() *roleWait { return &o.rw }
func (o *op) streaming() bool     { return o.kind == opSend || o.kind == opRecv }
func (o *op) park(timeout time.Duration) {
	o.waiting.Store(true)
	if !o.ready() {
		var intr chan struct{}
		if o.intr != nil {
			intr = o.intr.ch
		}
		if timeout < 0 {
			select {
			case <-o.wake:
			case <-intr:
			}
		} else {
			if o.timer == nil {
				o.timer = time.NewTimer(timeout)
			} else {
				o.timer.Reset(timeout)
			}
			select {
			case <-o.wake:
			case <-intr:
			case <-o.timer.C:
			}
			o.timer.Stop()
		}
		if intr != nil && o.intr.woken.Load() {
			// The wake stays pending for take; leave its token too.
			select {
			case o.intr.ch <- struct{}{}:
			default:
			}
		}
	}
	o.waiting.Store(false)
}

// opPool is a bounded, lock-free pool of ops: a Treiber stack whose head
// carries a tag against ABA.
type opPool struct {
	ops   []op
	head  atomic.Uint64 // tag<<32 | index+1 of the top free op; 0: empty
	inUse atomic.Int64
}

func newOpPool(n int) *opPool {
	p := &opPool{ops: make([]op, n)}
	for i := range p.ops {
		o := &p.ops[i]
		o.idx = uint32(i)
		o.wake = make(chan struct{}, 1)
		o.rw.ch = o.wake
		o.freeNext.Store(uint32(i + 2)) // next free: index+1 of i+1
	}
	p.ops[n-1].freeNext.Store(0)
	p.head.Store(1)
	return p
}

func (p *opPool) get() *op {
	for {
		h := p.head.Load()
		top := uint32(h)
		if top == 0 {
			return nil
		}
		o := &p.ops[top-1]
		next := o.freeNext.Load()
		if p.head.CompareAndSwap(h, (h>>32+1)<<32|uint64(next)) {
			p.inUse.Add(1)
			o.done.Store(false)
			select {
			case <-o.wake: // a stale wake-up from the op's last use
			default:
			}
			return o
		}
	}
}

// put clears the op's references and returns it to the pool.
func (p *opPool) put(o *op) {
	o.buf, o.cq, o.sock, o.evFn, o.err, o.next = nil, nil, nil, nil, nil, nil
	o.intr, o.target, o.snap = nil, nil, nil
	o.addr, o.arg, o.ctx, o.evSet = netip.AddrPort{}, 0, 0, 0
	o.progress, o.completed = 0, false
	o.n, o.res, o.local, o.peer = 0, 0, netip.AddrPort{}, netip.AddrPort{}
	if o.heap {
		return
	}
	p.inUse.Add(-1)
	for {
		h := p.head.Load()
		o.freeNext.Store(uint32(h))
		if p.head.CompareAndSwap(h, (h>>32+1)<<32|uint64(o.idx+1)) {
			return
		}
	}
}

// opList is a FIFO of pending ops, linked through op.next; poller-owned.
type opList struct {
	head, tail *op
	n          int
}

func (l *opList) push(o *op) {
	o.next = nil
	if l.tail == nil {
		l.head = o
	} else {
		l.tail.next = o
	}
	l.tail = o
	l.n++
}

// remove takes o out of the list; false if it is not there.
func (l *opList) remove(o *op) bool {
	var prev *op
	for x := l.head; x != nil; prev, x = x, x.next {
		if x != o {
			continue
		}
		if prev == nil {
			l.head = x.next
		} else {
			prev.next = x.next
		}
		if l.tail == x {
			l.tail = prev
		}
		x.next = nil
		l.n--
		return true
	}
	return false
}

func (l *opList) pop() *op {
	o := l.head
	if o == nil {
		return nil
	}
	l.head = o.next
	if l.head == nil {
		l.tail = nil
	}
	o.next = nil
	l.n--
	return o
}
