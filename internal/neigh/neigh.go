// Package neigh is the AF_XDP link's neighbour cache: the Ethernet
// addresses of peers, learnt from the kernel's route and neighbour tables
// (the kernel keeps owning ARP), the peers the kernel is still resolving,
// and the peers that failed to resolve and fail fast for a while. It
// never blocks: a peer the kernel does not know yet is asked for and
// reported as resolving, and Poll looks at the kernel's answer later.
//
// Times are durations on the caller's clock, so the cache is tested
// without a kernel or a sleep.
package neigh

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Kernel is what the cache asks of the kernel's tables; an
// *xdp.Resolver is one.
type Kernel interface {
	// NextHop returns the neighbour a frame to dst goes to: dst itself,
	// or its route's gateway.
	NextHop(dst netip.Addr) (netip.Addr, error)
	// Neighbour returns hop's Ethernet address if the kernel knows it.
	Neighbour(hop netip.Addr) (mac [6]byte, ok bool, err error)
	// Solicit asks the kernel to resolve hop.
	Solicit(hop netip.Addr) error
}

// Errors of Lookup besides the kernel's own.
var (
	// ErrResolving: the kernel is resolving the peer; its frames wait.
	ErrResolving = errors.New("neigh: resolving")
	// ErrUnresolved: the peer failed to resolve a moment ago, or too many
	// peers are resolving at once; it fails fast.
	ErrUnresolved = errors.New("neigh: unresolved")
	// ErrRefused: Refuse said nobody may send to the peer.
	ErrRefused = errors.New("neigh: refused")
	// ErrNoRoute: the kernel has no route to the peer.
	ErrNoRoute = errors.New("neigh: no route")
)

// TTL is how long a resolved Ethernet address is used before the
// kernel's table is asked again; the kernel keeps the entry fresh by ARP.
const TTL = 5 * time.Second

// A peer the kernel does not know is asked for and looked at again every
// PollEvery, for at most Wait; one that did not resolve then fails fast
// for FailFirst, doubling with each failure in a row up to FailMax (the
// kernel keeps resolving it meanwhile). At most MaxResolving peers
// resolve at once and at most MaxFailed failed ones are remembered, so
// that frames to addresses nobody answers for (a flood of spoofed
// sources) cost little.
const (
	PollEvery    = 50 * time.Microsecond
	Wait         = 2 * time.Millisecond
	FailFirst    = 10 * time.Millisecond
	FailMax      = 200 * time.Millisecond
	MaxResolving = 16
	MaxFailed    = 1024
)

// Cache is a neighbour cache over one interface's kernel tables. It is
// owned by one goroutine (the link's poller).
type Cache struct {
	kernel Kernel
	// Refuse, when set, names the peers nobody may send to; it is asked
	// only about peers not in the cache.
	Refuse func(peer netip.Addr) bool

	// last is the peer of the previous lookup: one comparison instead of
	// a map lookup in a conversation.
	last      netip.Addr
	lastEntry entry
	known     map[netip.Addr]entry
	failed    map[netip.Addr]failure
	resolving map[netip.Addr]*resolving
}

type entry struct {
	mac     [6]byte
	checked time.Duration
}

// failure is a peer that failed to resolve: it fails fast until until;
// backoff is how long the last failure set.
type failure struct{ until, backoff time.Duration }

type resolving struct {
	hop     netip.Addr    // the neighbour asked for: the peer, or its route's gateway
	since   time.Duration // when the peer was first asked for
	checked time.Duration // the last look at the kernel's table
}

// New returns an empty cache over kernel.
func New(kernel Kernel) *Cache {
	return &Cache{kernel: kernel, known: make(map[netip.Addr]entry), failed: make(map[netip.Addr]failure),
		resolving: make(map[netip.Addr]*resolving)}
}

// Lookup returns peer's Ethernet address at now from the cache or the
// kernel. A peer the kernel does not know yet is asked for: Lookup
// returns ErrResolving and Poll reports the answer.
func (c *Cache) Lookup(peer netip.Addr, now time.Duration) (mac [6]byte, err error) {
	if peer == c.last && now-c.lastEntry.checked < TTL {
		return c.lastEntry.mac, nil
	}
	if e, ok := c.known[peer]; ok && now-e.checked < TTL {
		c.last, c.lastEntry = peer, e
		return e.mac, nil
	}
	if _, ok := c.resolving[peer]; ok {
		return mac, ErrResolving
	}
	if f, ok := c.failed[peer]; ok && now < f.until {
		return mac, ErrUnresolved
	}
	if c.Refuse != nil && c.Refuse(peer) {
		return mac, ErrRefused
	}
	hop, err := c.kernel.NextHop(peer)
	if err != nil {
		return mac, fmt.Errorf("%w: %w", ErrNoRoute, err)
	}
	mac, ok, err := c.kernel.Neighbour(hop)
	if err != nil {
		return mac, fmt.Errorf("neigh: neighbour %v: %w", hop, err)
	}
	if ok {
		c.learn(peer, mac, now)
		return mac, nil
	}
	if len(c.resolving) >= MaxResolving {
		return mac, ErrUnresolved
	}
	if err := c.kernel.Solicit(hop); err != nil {
		return mac, err
	}
	c.resolving[peer] = &resolving{hop: hop, since: now, checked: now}
	return mac, ErrResolving
}

// Resolving returns how many peers the kernel is resolving.
func (c *Cache) Resolving() int { return len(c.resolving) }

// Poll looks at the kernel's table for the resolving peers whose turn it
// is at now, and calls done for each that resolved (ok) or did not
// within Wait; a peer that did not fails fast from then on.
func (c *Cache) Poll(now time.Duration, done func(peer netip.Addr, mac [6]byte, ok bool)) {
	for peer, r := range c.resolving {
		if now-r.checked < PollEvery && now-r.since < Wait {
			continue
		}
		r.checked = now
		mac, ok, err := c.kernel.Neighbour(r.hop)
		switch {
		case err == nil && ok:
			c.learn(peer, mac, now)
		case err != nil || now-r.since >= Wait:
			c.fail(peer, now)
		default:
			continue
		}
		delete(c.resolving, peer)
		done(peer, mac, ok && err == nil)
	}
}

// learn caches peer's Ethernet address.
func (c *Cache) learn(peer netip.Addr, mac [6]byte, now time.Duration) {
	e := entry{mac: mac, checked: now}
	c.known[peer] = e
	c.last, c.lastEntry = peer, e
	delete(c.failed, peer)
}

// fail makes peer fail fast for a while that doubles with every failure
// in a row: a peer whose answer was merely slow (a loaded host) is tried
// again by the next retransmission, one that never answers costs a
// lookup at most every FailMax.
func (c *Cache) fail(peer netip.Addr, now time.Duration) {
	if len(c.failed) >= MaxFailed {
		clear(c.failed)
	}
	b := FailFirst
	if f, ok := c.failed[peer]; ok {
		b = min(2*f.backoff, FailMax)
	}
	c.failed[peer] = failure{until: now + b, backoff: b}
}
