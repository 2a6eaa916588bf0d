package sdx

import (
	"errors"
	"sync/atomic"

	"github.com/sdx-project/sdx/provider"
)

// Fallback says why a connection went over kernel TCP. The set is closed:
// every PathTCP connection has exactly one of these, every PathSDX
// connection FallbackNone. docs/SWITCH.md lists them.
type Fallback uint8

const (
	// FallbackNone: the connection is over sdx.
	FallbackNone Fallback = iota
	// FallbackNoStack: no open stack's subnet holds the destination (and
	// Dialer.Stack was nil); the dial used the caller's namespace.
	FallbackNoStack
	// FallbackNotIPv4: the destination is not an IPv4 address; sdx
	// carries IPv4 only.
	FallbackNotIPv4
	// FallbackNoRoute: the kernel's route to the destination does not
	// leave through the stack's interface, or the destination is the
	// stack's own address.
	FallbackNoRoute
	// FallbackStackClosed: the stack was closed when the dial began.
	FallbackStackClosed
	// FallbackPeerNoSDX: the peer's kernel answered the sdx connect with
	// an ICMP port unreachable: no sdx stack serves that host.
	FallbackPeerNoSDX
	// FallbackTimeout: the sdx connect went unanswered for
	// Dialer.ProbeTimeout.
	FallbackTimeout
	// FallbackSetup: the sdx socket could not be set up (the provider's
	// sockets or operations were all taken, or it was shutting down).
	FallbackSetup
	// FallbackPeerTCP: an accepted connection whose client dialled kernel
	// TCP (it does not run sdx, or fell back on its side).
	FallbackPeerTCP

	numFallbacks
)

var fallbackNames = [numFallbacks]string{
	FallbackNone:        "none",
	FallbackNoStack:     "no-stack",
	FallbackNotIPv4:     "not-ipv4",
	FallbackNoRoute:     "no-route",
	FallbackStackClosed: "stack-closed",
	FallbackPeerNoSDX:   "peer-no-sdx",
	FallbackTimeout:     "timeout",
	FallbackSetup:       "setup-failed",
	FallbackPeerTCP:     "peer-tcp",
}

// String returns the reason's short name, as `sdx stat` prints it.
func (f Fallback) String() string {
	if f < numFallbacks {
		return fallbackNames[f]
	}
	return "Fallback(?)"
}

// FallbackReasons lists every reason but FallbackNone, in order.
func FallbackReasons() []Fallback {
	r := make([]Fallback, 0, numFallbacks-1)
	for f := FallbackNone + 1; f < numFallbacks; f++ {
		r = append(r, f)
	}
	return r
}

// fallbackCounts counts kernel TCP connections by reason; any goroutine.
type fallbackCounts [numFallbacks]atomic.Uint64

func (c *fallbackCounts) add(f Fallback) { c[f].Add(1) }

// snapshot returns the counts of every reason but FallbackNone, zeros
// included.
func (c *fallbackCounts) snapshot() map[Fallback]uint64 {
	m := make(map[Fallback]uint64, numFallbacks-1)
	for f := FallbackNone + 1; f < numFallbacks; f++ {
		m[f] = c[f].Load()
	}
	return m
}

// stackless counts the fallbacks of dials that had no stack.
var stackless fallbackCounts

// StacklessFallbacks returns the counts, by reason, of kernel TCP
// connections dialled with no stack to count them (FallbackNoStack and
// FallbackNotIPv4 without Dialer.Stack).
func StacklessFallbacks() map[Fallback]uint64 { return stackless.snapshot() }

// Fallbacks returns the counts, by reason, of the stack's connections
// that went over kernel TCP: its dials that fell back and its listeners'
// kernel TCP accepts. Every reason is present, zeros included.
func (s *Stack) Fallbacks() map[Fallback]uint64 { return s.fallbacks.snapshot() }

// whyNot classifies the error of an sdx connect that the dial falls back
// from.
func whyNot(err error) Fallback {
	switch {
	case errors.Is(err, provider.ErrPortUnreach):
		return FallbackPeerNoSDX
	case errors.Is(err, errNoAnswer):
		return FallbackTimeout
	}
	return FallbackSetup
}
