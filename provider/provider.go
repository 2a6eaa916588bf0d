package provider

import (
	"crypto/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/ring"
)

// Provider is a SAN service provider bound to one Link: it owns the
// link, the protocol engine, the descriptor table and the poller.
//
// Threads. Exactly one goroutine at a time holds the poller role
// (poller.go, with its states and hand-over): it alone touches the link
// (except Wake), the engine and every socket's pending operations. The
// dedicated goroutine routinePoller holds it when nobody else does. In
// every mode a goroutine blocked in a blocking verb (or
// CompletionQueue.Wait) takes the role inline when it is free, and runs
// the poll loop until its operation completes, so a request-response
// exchange has one polling goroutine per process, not two, and in
// PollPark that goroutine is the one the netpoller wakes when its answer
// arrives. Every other goroutine hands work to the role holder through a
// lock-free MPSC submission ring and gets results back through
// completion queues or its op's done flag.
//
// Every exported method may be called from any goroutine, except from an
// EventSelect callback or a completion notify function, which run on the
// poller and may only post (PostSend, PostRecv, ...), not block.
type Provider struct {
	cfg  Config
	link Link
	eng  *engine

	epoch time.Time

	// Submission: any goroutine pushes, the role holder drains.
	subq *ring.MPSC[*op]
	ops  *opPool

	// The poller role (poller.go).
	role poller

	// Lifecycle: active counts verbs between entry and submission, so
	// Cleanup can wait for them before it drains the ring.
	active   atomic.Int64
	closed   atomic.Bool // Cleanup has begun: verbs fail
	stopping atomic.Bool // the dedicated poller must exit, holders must yield
	cleaned  atomic.Bool // Cleanup is done: waiters stop waiting

	// Descriptor table. The state words are atomic (see slot); the free
	// list belongs to the role holder.
	slots     []slot
	freeSlots []uint32
	nSockets  atomic.Int64

	cqMu sync.Mutex // protects cqs
	cqs  []*CompletionQueue

	scratch []*op // role holder's: aborted ops of a closing socket

	quiet chan struct{} // signalled when the last verb leaves after Cleanup began
}

// Startup validates cfg, takes ownership of cfg.Link and starts the
// poller.
func Startup(cfg Config) (*Provider, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var seed [32]byte
	if cfg.Seed != nil {
		seed = *cfg.Seed
	} else if _, err := rand.Read(seed[:]); err != nil {
		return nil, err
	}
	eng, err := newEngine(cfg.Link, cfg.engineConfig(), seed)
	if err != nil {
		return nil, err
	}
	subq, err := ring.NewMPSC[*op](cfg.SubmitQueue)
	if err != nil {
		return nil, configErr("Config.SubmitQueue: %v", err)
	}
	p := &Provider{
		cfg:       cfg,
		link:      cfg.Link,
		eng:       eng,
		epoch:     time.Now(),
		subq:      subq,
		ops:       newOpPool(cfg.MaxOps),
		slots:     make([]slot, cfg.MaxSockets),
		freeSlots: make([]uint32, cfg.MaxSockets),
		quiet:     make(chan struct{}, 1),
	}
	for i := range p.freeSlots {
		p.freeSlots[i] = uint32(cfg.MaxSockets - 1 - i)
	}
	p.role.init()
	go p.routinePoller()
	return p, nil
}

// nanotime is the provider's clock: monotonic nanoseconds since Startup.
func (p *Provider) nanotime() int64 { return int64(time.Since(p.epoch)) }

// enter registers a verb in progress; it reports false after Cleanup
// began. Every true enter is paired with leave.
func (p *Provider) enter() bool {
	p.active.Add(1)
	if p.closed.Load() {
		p.leave()
		return false
	}
	return true
}

// leave ends a verb's registration; the last one to leave after Cleanup
// began lets Cleanup go on.
func (p *Provider) leave() {
	if p.active.Add(-1) == 0 && p.closed.Load() {
		select {
		case p.quiet <- struct{}{}:
		default:
		}
	}
}

// pollOnce is one step of the poller: submissions, input, timers, the
// operations they unblock, output. It reports whether anything happened.
func (p *Provider) pollOnce(now int64) bool {
	e := p.eng
	e.now = now
	worked := p.drainSubmissions()
	if e.receive(now) > 0 {
		worked = true
	}
	if e.runTimers(now) {
		worked = true
	}
	if p.settle() {
		worked = true
	}
	// Output the link had no room for is retried at once, not after a
	// sleep.
	return worked || len(e.output) > 0
}

// settle reacts to the engine's events and sends what they queued; it
// reports whether there was anything to do.
func (p *Provider) settle() bool {
	e := p.eng
	worked := false
	if len(e.changed) > 0 {
		p.processChanged()
		worked = true
	}
	if e.transmit() {
		worked = true
	}
	if len(e.changed) > 0 {
		p.processChanged()
	}
	return worked
}

func (p *Provider) drainSubmissions() bool {
	any := false
	for {
		o, ok := p.subq.Pop()
		if !ok {
			if any {
				p.roomInRing()
			}
			return any
		}
		any = true
		p.apply(o)
	}
}

// Cleanup ends the provider: every socket is hard-closed (pending
// operations complete with ErrAborted), the poller stops and the link is
// closed. Later verbs fail with ENOTSOCK (ENETDOWN for Socket). It is
// idempotent; the first call returns the link's Close error.
func (p *Provider) Cleanup() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	for p.active.Load() > 0 {
		<-p.quiet
	}
	p.stopping.Store(true)
	p.link.Wake()
	p.role.wakePoller()
	<-p.role.done
	// Take the role like any goroutine: the holder sees stopping and
	// hands it over.
	rw := &roleWait{ch: make(chan struct{}, 1)}
	for !p.role.register(rw, p.nanotime()) {
		p.link.Wake()
		<-rw.ch
		if p.role.unregister(rw) {
			break
		}
	}
	e := p.eng
	e.now = p.nanotime()
	p.drainSubmissions()
	for i := range p.slots {
		sl := &p.slots[i]
		w := sl.w.Load()
		if w&1 == 0 || !sl.w.CompareAndSwap(w, (w|1)+1) {
			continue
		}
		sock := sl.sock.Load()
		sl.sock.Store(nil)
		p.nSockets.Add(-1)
		if sock.refs.Add(-1) == 0 {
			sock.closing.Store(true)
			p.closeSocket(sock)
		}
	}
	e.transmit()
	e.releaseHeld()
	err := p.link.Close()
	e.unlinkAll()
	p.cleaned.Store(true)
	p.cqMu.Lock()
	for _, q := range p.cqs {
		q.signal()
	}
	p.cqMu.Unlock()
	// The role stays taken: nothing runs the poll loop again.
	return err
}
