package provider

import (
	"crypto/rand"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/ring"
)

// Provider is a SAN service provider bound to one Link: it owns the
// link, the protocol engine, the descriptor table and the poller.
//
// Threads. Exactly one goroutine at a time holds the poller role (the
// "poller token"): it alone touches the link (except Wake), the engine and
// every socket's pending operations. The dedicated goroutine
// routinePoller holds it when nobody else does. In both modes a
// goroutine blocked in a blocking verb (or CompletionQueue.Wait) takes the
// role inline when it is free, and runs the poll loop until its operation
// completes, so a request-response exchange has one spinning goroutine per
// process, not two. Every other goroutine hands work to the role holder
// through a lock-free MPSC submission ring and gets results back through
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

	// The poller role.
	token      atomic.Bool  // held by the goroutine running the poll loop
	want       atomic.Int32 // goroutines blocked in a verb that would take the role
	parked     atomic.Int32 // goroutines parked until an operation completes
	posted     atomic.Int64 // overlapped operations posted and not yet completed
	dedicated  atomic.Bool  // the role holder is routinePoller, which gives way when asked
	releasedAt atomic.Int64 // nanotime of the last release by a goroutine that held the role inline
	sleeping   atomic.Bool  // the holder is (about to be) in link.Wait
	pollerWake chan struct{}
	pollerDone chan struct{}
	parkTimer  *time.Timer // the dedicated poller's; only it uses it

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
	yield   bool  // role holder's: it woke a parked goroutine (see pollLoop)
	yielded int64 // role holder's: when a holder last yielded its CPU
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
		cfg:        cfg,
		link:       cfg.Link,
		eng:        eng,
		epoch:      time.Now(),
		subq:       subq,
		ops:        newOpPool(cfg.MaxOps),
		pollerWake: make(chan struct{}, 1),
		pollerDone: make(chan struct{}),
		parkTimer:  time.NewTimer(time.Hour),
		slots:      make([]slot, cfg.MaxSockets),
		freeSlots:  make([]uint32, cfg.MaxSockets),
	}
	p.parkTimer.Stop()
	for i := range p.freeSlots {
		p.freeSlots[i] = uint32(cfg.MaxSockets - 1 - i)
	}
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
		p.active.Add(-1)
		return false
	}
	return true
}

func (p *Provider) leave() { p.active.Add(-1) }

// submit hands o to the role holder.
func (p *Provider) submit(o *op) {
	for !p.subq.Push(o) {
		// The ring is full: the holder is draining it.
		p.kick()
		runtime.Gosched()
	}
	p.kick()
}

// kick makes a holder sleeping in link.Wait look at the ring.
func (p *Provider) kick() {
	if p.sleeping.Load() {
		p.link.Wake()
	}
}

func (p *Provider) tryToken() bool { return !p.token.Load() && p.token.CompareAndSwap(false, true) }

// Hand-back of the role to the dedicated poller. A goroutine that held
// the role inline for a moment (one blocking call of a request-response
// loop) does not wake the poller: it will most likely take the role again
// at its next call, and waking a goroutine costs a CPU the other side of
// the exchange may be spinning on. The parked poller looks for a free role
// every pollerCheckMin instead, backing off to pollerCheckMax while the
// role stays taken. A holder that kept the role longer than longHold,
// leaves submissions behind, or leaves operations pending that only a
// poller can complete (a goroutine parked on one, or an overlapped
// operation posted to a completion queue), wakes it at once.
const (
	pollerCheckMin = 200 * time.Microsecond
	pollerCheckMax = 50 * time.Millisecond
	longHold       = time.Millisecond
)

// releaseToken gives up the role taken inline at heldSince (nanotime).
func (p *Provider) releaseToken(heldSince int64) {
	now := p.nanotime()
	p.releasedAt.Store(now)
	p.token.Store(false)
	if now-heldSince > int64(longHold) || p.subq.Len() > 0 || p.parked.Load() > 0 || p.posted.Load() > 0 || p.stopping.Load() {
		p.wakePoller()
	}
}

func (p *Provider) wakePoller() {
	select {
	case p.pollerWake <- struct{}{}:
	default:
	}
}

// routinePoller is the dedicated poller goroutine. It holds the role
// whenever no blocked verb does, and yields to one.
func (p *Provider) routinePoller() {
	defer close(p.pollerDone)
	check := pollerCheckMin
	woken := true
	for !p.stopping.Load() {
		// On its timer the poller takes a free role only once it has been
		// free for pollerCheckMin: a goroutine that let it go a moment
		// ago (between two calls of a request-response loop) will most
		// likely take it again, and would then have to wait for the
		// poller to give it back.
		if (woken || p.nanotime()-p.releasedAt.Load() >= int64(pollerCheckMin)) && p.tryToken() {
			check = pollerCheckMin
			p.dedicated.Store(true)
			p.pollLoop(nil, true, 0)
			p.dedicated.Store(false)
			p.token.Store(false)
			if p.want.Load() == 0 && !p.stopping.Load() {
				continue // the goroutine that wanted the role gave up
			}
		}
		// Someone else holds the role: look again soon, or when woken.
		p.parkTimer.Reset(check)
		select {
		case <-p.pollerWake:
			check, woken = pollerCheckMin, true
		case <-p.parkTimer.C:
			check, woken = min(2*check, pollerCheckMax), false
		}
		p.parkTimer.Stop()
	}
}

// waitable is what await waits for: an op's completion, or a completion
// queue's contents.
type waitable interface {
	ready() bool
	park(timeout time.Duration)
}

// await blocks until w is ready, or the deadline (nanotime; 0: none)
// passes. It takes the poller role when it can and polls until w is
// ready; otherwise it asks the holder for the role, spins a little, and
// parks. A goroutine that gave the role up to another because it had
// nothing to do (see pollLoop) parks at once and does not ask for the
// role back: the goroutine it gave way to, or the dedicated poller after
// it, completes w.
func (p *Provider) await(w waitable, deadline int64) { p.awaitFrom(w, deadline, false) }

// awaitFrom is await for a goroutine that may have just given way (idle).
func (p *Provider) awaitFrom(w waitable, deadline int64, idle bool) {
	wanted := false
	spinUntil, handover := int64(0), int64(0)
	for !w.ready() {
		now := p.nanotime()
		if deadline != 0 && now >= deadline {
			break
		}
		if !p.stopping.Load() && !idle {
			if p.tryToken() {
				if wanted {
					wanted = false
					p.want.Add(-1)
				}
				idle = p.pollLoop(w, false, deadline)
				p.releaseToken(now)
				continue
			}
			if !wanted {
				wanted = true
				p.want.Add(1)
				p.kick()
			}
		}
		if spinUntil == 0 {
			spinUntil = now + int64(p.cfg.Spin)
			handover = now + int64(handoverWait)
		}
		if now < spinUntil && !idle && (p.cfg.Mode == PollBusy || !crowded(now)) {
			runtime.Gosched()
			continue
		}
		if wanted && now < handover && p.dedicated.Load() {
			// The dedicated poller gives the role up as soon as it looks,
			// and we will then wait for w in the link ourselves: one
			// wake-up when w's input arrives instead of two (the poller's,
			// then ours). This is not spinning on the network.
			runtime.Gosched()
			continue
		}
		// Park: give up the claim on the role first, so the holder does
		// not yield it to a goroutine that is asleep.
		if wanted {
			wanted = false
			p.want.Add(-1)
		}
		p.parked.Add(1)
		if !p.token.Load() {
			p.wakePoller()
		}
		timeout := time.Duration(-1)
		if deadline != 0 {
			timeout = time.Duration(deadline - now)
		}
		w.park(timeout)
		p.parked.Add(-1)
		spinUntil, idle = 0, false
	}
	if wanted {
		p.want.Add(-1)
		if !p.token.Load() {
			p.wakePoller()
		}
	}
}

// handoverWait bounds how long a goroutine that asked the dedicated poller
// for the role waits for it before it parks.
const handoverWait = 200 * time.Microsecond

// yieldEvery is how long a spinning role holder runs at most without
// letting other goroutines have its CPU.
const yieldEvery = time.Millisecond

// parkOn blocks on ch for up to timeout (negative: no limit).
func (p *Provider) parkOn(ch chan struct{}, timeout time.Duration) { parkChan(ch, timeout) }

func parkChan(ch chan struct{}, timeout time.Duration) {
	if timeout < 0 {
		<-ch
		return
	}
	t := time.NewTimer(timeout)
	select {
	case <-ch:
	case <-t.C:
	}
	t.Stop()
}

// pollLoop runs the poll loop as role holder until w is ready (inline),
// or, for the dedicated poller, until another goroutine wants the role
// (adaptive) or the provider stops. An inline holder with nothing to do
// that would sleep in the link while another goroutine wants the role
// gives way to it instead, and reports so (idle): the other one has work
// to apply at once, and its own wait may be long (an idle connection's
// Read).
func (p *Provider) pollLoop(w waitable, dedicated bool, deadline int64) (idle bool) {
	e := p.eng
	last := p.nanotime()
	for {
		if w != nil && w.ready() || p.stopping.Load() {
			return false
		}
		if dedicated && p.want.Load() > 0 {
			return false
		}
		now := p.nanotime()
		if p.pollOnce(now) {
			last = now
			continue
		}
		if deadline != 0 && now >= deadline {
			return false
		}
		if p.cfg.Mode == PollBusy || now-last < int64(p.cfg.Spin) && !crowded(now) {
			// Spinning. The dedicated poller yields on every turn, so
			// the goroutines it completes get a CPU even when every CPU
			// spins. An inline holder, in either mode, yields only when
			// a goroutine needs its CPU: one we woke, one that wants the
			// role, and at least once a millisecond the rest (timers,
			// the runtime). A yield on every turn cost the adaptive
			// ping-pong 7 -> 40us, and busy mode's 8.2 -> 10 µs: the
			// inline holder's thread is often locked and pinned, and a
			// yield with anything else runnable hands the CPU over
			// through the scheduler and back.
			if dedicated || p.yield || p.want.Load() > 0 || now-p.yielded > int64(yieldEvery) {
				p.yield = false
				p.yielded = now
				runtime.Gosched()
			}
			continue
		}
		// Idle: sleep in the link until input, a kick or the next timer.
		if !dedicated && p.want.Load() > 0 {
			return true
		}
		timeout := time.Second
		if t, ok := e.nextTimer(); ok {
			timeout = min(timeout, time.Duration(t-now))
		}
		if deadline != 0 {
			timeout = min(timeout, time.Duration(deadline-now))
		}
		p.sleeping.Store(true)
		if p.subq.Len() == 0 && (w == nil || !w.ready()) && !(dedicated && p.want.Load() > 0) && !p.stopping.Load() {
			p.link.Wait(timeout)
		}
		p.sleeping.Store(false)
		last = p.nanotime()
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
		runtime.Gosched()
	}
	p.stopping.Store(true)
	p.link.Wake()
	p.wakePoller()
	<-p.pollerDone
	for !p.tryToken() {
		p.link.Wake()
		runtime.Gosched()
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

// Link returns the provider's link, for its own counters (an *XDPLink's
// Stats, Queue and Steering). Like every use of the link outside the
// poller, reading those is racy while the provider runs; it is meant for
// reports.
func (p *Provider) Link() Link { return p.link }
