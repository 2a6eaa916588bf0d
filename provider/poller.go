package provider

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// poller is the poller role of a Provider: the right to run the poll loop,
// which alone touches the link (except Wake), the engine and every
// socket's pending operations. Exactly one goroutine holds it at a time.
//
// Who holds it, and how it moves:
//
//	               tryTake (a verb, inline)
//	    ┌──────────────────────────────────────────┐
//	    │                                          ▼
//	  free ◄──── release (no wanter) ────── held inline ─── nothing to do ──► sleeping
//	   ▲ │                                    ▲  │  ▲                         (in link.Wait)
//	   │ │ woken, or free for pollerCheckMin   │  │  └──── input, kick, timer ────┘
//	   │ ▼                                    │  │
//	  dedicated ── a wanter registered ───────┘  └── idle while a wanter waits ──► given way
//	(routinePoller)   (hand-off: the role goes       (hand-off; the giver parks on
//	                   to the wanter, which is         its own operation and does
//	                   woken)                          not ask for the role back)
//
// The rule for every wait, stated once: register, then retry, then wait.
// A goroutine that wants the role registers as a wanter (under mu, after
// one more tryTake), then kicks the holder and parks on its own channel;
// a holder that gives the role up hands it to the newest wanter without
// freeing it (granted), and wakes it. A goroutine whose operation
// completes first takes itself off the list; if the role was handed to
// it meanwhile, it hands it on. Nobody loops on runtime.Gosched waiting
// for another goroutine: only the spinning phases of PollAdaptive and
// PollBusy yield, and they wait for the network, not for a goroutine.
//
// Who gives way to a wanter: the dedicated poller at once, always (the
// wanter then waits in the link itself, and is woken by its own input).
// An inline holder only when it has nothing to do and a wanter registered
// within handoverWait: a goroutine that has just submitted work. One that
// has waited longer is asleep on an operation the holder completes for
// it; handing it the role would leave the link unwatched for as long as
// waking it takes, on every hand-off.
type poller struct {
	held     atomic.Bool  // the role is taken
	want     atomic.Int32 // registered wanters (len(wanters), readable without mu)
	wantedAt atomic.Int64 // nanotime of the latest registration

	mu      sync.Mutex  // protects wanters
	wanters []*roleWait // FIFO of goroutines parked until the role is handed to them

	parked     atomic.Int32 // goroutines parked until an operation completes
	posted     atomic.Int64 // overlapped operations posted and not yet completed
	dedicated  atomic.Bool  // the holder is routinePoller, which gives way when asked
	sleeping   atomic.Bool  // the holder is (about to be) in link.Wait
	releasedAt atomic.Int64 // nanotime of the last release by an inline holder

	wake  chan struct{} // routinePoller's
	done  chan struct{} // closed when routinePoller returns
	timer *time.Timer   // routinePoller's

	// Submitters waiting for room in a full submission ring.
	subWaiting atomic.Int32
	subRoom    chan struct{}

	// The holder's own.
	yield   bool  // it woke a parked goroutine (see pollLoop)
	yielded int64 // when a holder last yielded its CPU

	st pollerCounters
}

// pollerCounters count what the role did; any goroutine reads them. The
// holder alone writes polls, idlePolls, sleeps and its own yields
// (counters, as the engine's: no locked add on the spinning path); the
// rest, the wanters' yields among them, are added to from any goroutine.
type pollerCounters struct {
	polls, idlePolls, sleeps, holderYields counter       // the holder's
	yields, handoffs, pollerWakes, kicks   atomic.Uint64 // yields: the wanters'
}

// roleWait is a goroutine's place in the list of wanters: granted is set
// (with the role held on its behalf) by the holder that hands the role
// over, which then signals ch.
type roleWait struct {
	granted atomic.Bool
	queued  bool // in wanters; under poller.mu
	ch      chan struct{}
}

func (w *roleWait) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (pl *poller) init() {
	pl.wake = make(chan struct{}, 1)
	pl.done = make(chan struct{})
	pl.timer = time.NewTimer(time.Hour)
	pl.timer.Stop()
	pl.subRoom = make(chan struct{}, 1)
}

// tryTake takes the role if it is free.
func (pl *poller) tryTake() bool { return !pl.held.Load() && pl.held.CompareAndSwap(false, true) }

// register puts w on the list of wanters, unless the role is free: then
// it takes it and reports true. Register, then retry: the holder hands
// the role to a wanter under mu, so one that frees it sees the wanter.
func (pl *poller) register(w *roleWait, now int64) (took bool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	// Counted before the retry: a release that frees the role after our
	// look sees the count and serves the list (see release).
	pl.want.Add(1)
	if pl.tryTake() {
		pl.want.Add(-1)
		return true
	}
	w.granted.Store(false)
	w.queued = true
	pl.wanters = append(pl.wanters, w)
	pl.wantedAt.Store(now)
	return false
}

// fresh reports whether a wanter registered within handoverWait of now.
func (pl *poller) fresh(now int64) bool {
	return pl.want.Load() > 0 && now-pl.wantedAt.Load() < int64(handoverWait)
}

// handoverWait is how long a wanter counts as fresh: one an idle inline
// holder gives way to.
const handoverWait = 200 * time.Microsecond

// unregister takes w off the list and reports whether the role was handed
// to it meanwhile: then the caller holds it.
func (pl *poller) unregister(w *roleWait) (granted bool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if w.queued {
		for i, x := range pl.wanters {
			if x == w {
				pl.wanters = append(pl.wanters[:i], pl.wanters[i+1:]...)
				break
			}
		}
		w.queued = false
		pl.want.Add(-1)
		return false
	}
	return w.granted.Swap(false)
}

// handOff gives up the role, held by the caller: to the newest wanter
// (the likeliest to have work, and a warm cache), which is woken holding
// it, or, with none, by freeing it.
func (pl *poller) handOff() {
	pl.mu.Lock()
	if len(pl.wanters) == 0 {
		pl.held.Store(false)
		pl.mu.Unlock()
		return
	}
	w := pl.wanters[len(pl.wanters)-1]
	pl.wanters[len(pl.wanters)-1] = nil
	pl.wanters = pl.wanters[:len(pl.wanters)-1]
	w.queued = false
	pl.want.Add(-1)
	w.granted.Store(true)
	pl.mu.Unlock()
	pl.st.handoffs.Add(1)
	w.signal()
}

// release gives up the role: free when nobody wants it, else handed over.
func (pl *poller) release() {
	if pl.want.Load() == 0 {
		pl.held.Store(false)
		// A wanter that registered after the look above found the role
		// still held: serve it, unless another goroutine took the role
		// (its release serves it then).
		if pl.want.Load() == 0 || !pl.tryTake() {
			return
		}
	}
	pl.handOff()
}

// wakePoller wakes routinePoller if it is parked.
func (pl *poller) wakePoller() {
	select {
	case pl.wake <- struct{}{}:
		pl.st.pollerWakes.Add(1)
	default:
	}
}

// PollerStats are the poller role's counters.
type PollerStats struct {
	Polls       uint64 // steps of the poll loop
	IdlePolls   uint64 // steps that found nothing to do
	Sleeps      uint64 // waits in the link
	Handoffs    uint64 // the role handed from its holder to a waiting goroutine
	PollerWakes uint64 // the dedicated poller woken
	Kicks       uint64 // a holder sleeping in the link woken for a submission or a wanter
	Yields      uint64 // runtime.Gosched while spinning on the network (never in PollPark)
}

func (pl *poller) stats() PollerStats {
	return PollerStats{
		Polls:       pl.st.polls.Load(),
		IdlePolls:   pl.st.idlePolls.Load(),
		Sleeps:      pl.st.sleeps.Load(),
		Handoffs:    pl.st.handoffs.Load(),
		PollerWakes: pl.st.pollerWakes.Load(),
		Kicks:       pl.st.kicks.Load(),
		Yields:      pl.st.yields.Load() + pl.st.holderYields.Load(),
	}
}

// ---- the Provider's side of the role ---------------------------------------

// submit hands o to the role holder. A full ring blocks the caller until
// the holder has drained it (register, retry, wait); it never spins.
func (p *Provider) submit(o *op) {
	for !p.subq.Push(o) {
		p.role.subWaiting.Add(1)
		p.kick()
		if p.subq.Push(o) {
			p.role.subWaiting.Add(-1)
			break
		}
		if !p.role.held.Load() {
			p.role.wakePoller() // nobody drains the ring right now
		}
		<-p.role.subRoom
		p.role.subWaiting.Add(-1)
	}
	p.kick()
}

// roomInRing wakes a submitter waiting for room, after a drain.
func (p *Provider) roomInRing() {
	if p.role.subWaiting.Load() > 0 {
		select {
		case p.role.subRoom <- struct{}{}:
		default:
		}
	}
}

// kick makes a holder sleeping in link.Wait look at the ring.
func (p *Provider) kick() {
	if p.role.sleeping.Load() {
		p.role.st.kicks.Add(1)
		p.link.Wake()
	}
}

// Hand-back of the role to the dedicated poller. A goroutine that held
// the role inline for a moment (one blocking call of a request-response
// loop) does not wake the poller: it will most likely take the role again
// at its next call, and waking a goroutine costs a CPU the other side of
// the exchange may be using. The parked poller looks for a free role
// every pollerCheckMin instead, backing off while the role stays taken,
// to pollerCheckPosted while overlapped operations are posted (a
// listener's accept) and the role changes hands, and to pollerCheckMax
// otherwise. A holder that kept
// the role longer than longHold, or leaves submissions behind, or
// goroutines parked on operations that only a poller can complete, wakes
// it at once; so does one that leaves overlapped operations posted, unless
// it held the role for a Send or Recv, the calls of a stream loop that
// come back at once (a connection's close, connect or accept does not:
// without the wake a listener's next connect would wait for the timer).
const (
	pollerCheckMin    = 200 * time.Microsecond
	pollerCheckPosted = 5 * time.Millisecond
	pollerCheckMax    = 50 * time.Millisecond
	longHold          = time.Millisecond
)

// releaseInline gives up the role taken inline at heldSince (nanotime)
// for a stream call (streaming: a Send or Recv) or another.
func (p *Provider) releaseInline(heldSince int64, streaming bool) {
	now := p.nanotime()
	p.role.releasedAt.Store(now)
	p.role.release()
	if now-heldSince > int64(longHold) || p.subq.Len() > 0 || p.role.parked.Load() > 0 || p.stopping.Load() ||
		!streaming && p.role.posted.Load() > 0 {
		if !p.role.held.Load() {
			p.role.wakePoller()
		}
	}
}

// routinePoller is the dedicated poller goroutine. It holds the role
// whenever no blocked verb does, and hands it to one that asks.
func (p *Provider) routinePoller() {
	pl := &p.role
	defer close(pl.done)
	check := pollerCheckMin
	woken := true
	var seen int64 // releasedAt at the last look
	for !p.stopping.Load() {
		// On its timer the poller takes a free role only once it has been
		// free for pollerCheckMin: a goroutine that let it go a moment
		// ago (between two calls of a request-response loop) will most
		// likely take it again, and would then have to ask for it.
		if (woken || p.nanotime()-pl.releasedAt.Load() >= int64(pollerCheckMin)) && pl.tryTake() {
			check = pollerCheckMin
			pl.dedicated.Store(true)
			p.pollLoop(nil, true, 0)
			pl.dedicated.Store(false)
			pl.handOff()
			if !pl.held.Load() && !p.stopping.Load() {
				continue // the goroutine that wanted the role gave up
			}
		}
		// Someone else holds the role: look again soon, or when woken.
		pl.timer.Reset(check)
		select {
		case <-pl.wake:
			check, woken = pollerCheckMin, true
		case <-pl.timer.C:
			// While the role changes hands and operations are posted,
			// look often; while one goroutine keeps it (an idle
			// connection's Read), it serves them: back off.
			limit := pollerCheckMax
			if r := pl.releasedAt.Load(); r != seen && pl.posted.Load() > 0 {
				limit, seen = pollerCheckPosted, r
			}
			check, woken = min(2*check, limit), false
		}
		pl.timer.Stop()
	}
}

// waitable is what await waits for: an op's completion, or a completion
// queue's contents.
type waitable interface {
	ready() bool
	park(timeout time.Duration)
	roleWait() *roleWait
	streaming() bool // a Send or Recv (see releaseInline)
}

// await blocks until w is ready, or the deadline (nanotime; 0: none)
// passes. It takes the poller role when it can and polls until w is
// ready; otherwise it spins a little (not in PollPark), then registers
// for the role and parks: the holder hands it over when it has nothing
// to do, or w completes. A goroutine that gave the role up to another
// because it had nothing to do (see pollLoop) parks at once and does not
// ask for the role back: the goroutine it gave way to, or the dedicated
// poller after it, completes w.
func (p *Provider) await(w waitable, deadline int64) { p.awaitFrom(w, deadline, false) }

// awaitFrom is await for a goroutine that may have just given way (idle).
func (p *Provider) awaitFrom(w waitable, deadline int64, idle bool) {
	pl := &p.role
	rw := w.roleWait()
	spinUntil := int64(0)
	for !w.ready() {
		now := p.nanotime()
		if deadline != 0 && now >= deadline {
			break
		}
		if !p.stopping.Load() && !idle && pl.tryTake() {
			idle = p.holdInline(w, now, deadline)
			continue
		}
		if spinUntil == 0 {
			spinUntil = now + int64(p.cfg.Spin)
		}
		if now < spinUntil && !idle && p.cfg.Mode != PollPark && (p.cfg.Mode == PollBusy || !crowded(now)) {
			pl.st.yields.Add(1) // not the holder: several may spin
			runtime.Gosched()   // spinning on the network, not on a goroutine
			continue
		}
		// Register, retry, wait.
		wanted := false
		if !idle && !p.stopping.Load() {
			if pl.register(rw, now) {
				idle = p.holdInline(w, now, deadline) // the role was free after all
				continue
			}
			wanted = true
			p.kick()
		}
		pl.parked.Add(1)
		if !pl.held.Load() {
			pl.wakePoller()
		}
		timeout := time.Duration(-1)
		if deadline != 0 {
			timeout = time.Duration(deadline - now)
		}
		if !w.ready() && !(wanted && rw.granted.Load()) {
			w.park(timeout)
		}
		pl.parked.Add(-1)
		spinUntil, idle = 0, false
		if wanted && pl.unregister(rw) {
			idle = p.holdInline(w, p.nanotime(), deadline) // handed the role
		}
	}
}

// holdInline polls with the role, taken at now, until w is ready (or
// the caller gives way, or stops), then releases it.
func (p *Provider) holdInline(w waitable, now, deadline int64) (idle bool) {
	if !w.ready() && !p.stopping.Load() {
		idle = p.pollLoop(w, false, deadline)
	}
	p.releaseInline(now, w.streaming())
	return idle
}

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
// or the provider stops. An inline holder with nothing to do that would
// sleep in the link while another goroutine wants the role gives way to
// it instead, and reports so (idle): the other one has work to apply at
// once, and its own wait may be long (an idle connection's Read). The
// caller then releases the role, which hands it to the wanter.
func (p *Provider) pollLoop(w waitable, dedicated bool, deadline int64) (idle bool) {
	e := p.eng
	pl := &p.role
	last := p.nanotime()
	for {
		if w != nil && w.ready() || p.stopping.Load() {
			return false
		}
		if dedicated && pl.want.Load() > 0 {
			return false
		}
		now := p.nanotime()
		pl.st.polls.Add(1)
		if p.pollOnce(now) {
			last = now
			continue
		}
		pl.st.idlePolls.Add(1)
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
			if dedicated || pl.yield || pl.fresh(now) || now-pl.yielded > int64(yieldEvery) {
				pl.yield = false
				pl.yielded = now
				pl.st.holderYields.Add(1)
				runtime.Gosched()
			}
			continue
		}
		// Idle: sleep in the link until input, a kick or the next timer.
		if !dedicated && pl.fresh(now) {
			return true
		}
		timeout := time.Second
		if t, ok := e.nextTimer(); ok {
			timeout = min(timeout, time.Duration(t-now))
		}
		if deadline != 0 {
			timeout = min(timeout, time.Duration(deadline-now))
		}
		pl.sleeping.Store(true)
		if p.subq.Len() == 0 && (w == nil || !w.ready()) && !(dedicated && pl.want.Load() > 0) && !pl.fresh(p.nanotime()) && !p.stopping.Load() {
			pl.st.sleeps.Add(1)
			p.link.Wait(timeout)
		}
		pl.sleeping.Store(false)
		last = p.nanotime()
	}
}
