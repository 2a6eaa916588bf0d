package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/xdp"
)

// Hosts are the two ends every system runs between: the client in A, the
// server in B, and the CPUs their spinning threads are pinned to.
type Hosts struct {
	A, B      testbed.Host
	ClientCPU int
	ServerCPU int
}

// Range is the only address range the harness sends to: 198.18.0.0/15, set
// aside for network benchmarks (RFC 2544).
var Range = netip.MustParsePrefix("198.18.0.0/15")

// Check refuses hosts whose addresses lie outside Range or that are not
// complete enough to run on.
func (h *Hosts) Check() error {
	for _, x := range []*testbed.Host{&h.A, &h.B} {
		if !x.Addr.Is4() || !Range.Contains(x.Addr) {
			return fmt.Errorf("bench: address %v is outside %v; refusing to send to it", x.Addr, Range)
		}
		if x.NS == "" || x.If == "" || len(x.MAC) != 6 {
			return fmt.Errorf("bench: host %q/%q is missing its namespace, interface or MAC", x.NS, x.If)
		}
	}
	if h.A.Addr == h.B.Addr {
		return errors.New("bench: both hosts have the same address")
	}
	if h.ClientCPU == h.ServerCPU {
		return fmt.Errorf("bench: client and server spin on the same CPU %d", h.ClientCPU)
	}
	return nil
}

// MTU is the link's MTU: the smaller of the two interfaces'.
func (h *Hosts) MTU() (int, error) {
	mtu := 0
	for _, x := range []*testbed.Host{&h.A, &h.B} {
		if err := x.Do(func() error {
			ifi, err := net.InterfaceByName(x.If)
			if err == nil && (mtu == 0 || ifi.MTU < mtu) {
				mtu = ifi.MTU
			}
			return err
		}); err != nil {
			return 0, fmt.Errorf("bench: MTU of %s/%s: %w", x.NS, x.If, err)
		}
	}
	return mtu, nil
}

// Queues returns the fewer of the two interfaces' rx queues.
func (h *Hosts) Queues() (int, error) {
	n := 0
	for _, x := range []*testbed.Host{&h.A, &h.B} {
		q, err := xdp.RxQueues(x.NS, x.If)
		if err != nil {
			return 0, fmt.Errorf("bench: queues of %s/%s: %w", x.NS, x.If, err)
		}
		if n == 0 || q < n {
			n = q
		}
	}
	return n, nil
}

// applies is AppliesOn on h.
func (h *Hosts) applies(sys System, spec Spec) (bool, string, error) {
	mtu, err := h.MTU()
	if err != nil {
		return false, "", err
	}
	queues, err := h.Queues()
	if err != nil {
		return false, "", err
	}
	ok, why := AppliesOn(sys, spec, mtu, queues)
	return ok, why, nil
}

// Kind says how a system carries messages.
type Kind uint8

const (
	Stream   Kind = iota + 1 // a byte stream: messages are byte counts, Recv returns what is there
	Datagram                 // each Send is one message and each Recv returns one
)

// System is one way of moving bytes between Hosts.A and Hosts.B.
//
// Open, Pair, Listen and Close are called by one goroutine, one run at a
// time; the Conns they return are each used by one goroutine.
type System interface {
	Name() string
	Kind() Kind
	// MaxMessage is the largest message a Send may carry over a link
	// of the given MTU; 0 means any.
	MaxMessage(mtu int) int
	// Pinned reports whether the system's loops spin on pinned threads.
	Pinned() bool
	// Open prepares the system on h (attach programs, open queues).
	Open(h *Hosts) error
	// Pair connects a client end in A with a server end in B. Their
	// spinning calls give up once b is done.
	Pair(b *Bound) (client, server Conn, err error)
	Close() error
}

// Listener is a stream system's listening socket in B; Dial connects to it
// and must be called on a thread inside A's namespace.
type Listener interface {
	Accept() (Conn, error)
	Dial() (Conn, error)
	Close() error
}

// Listening is a System that can set up connections, for the connection
// rate workload.
type Listening interface {
	Listen(b *Bound) (Listener, error)
}

// Modes is a System that attaches XDP; it reports what the kernel
// granted: the XDP attach mode and the AF_XDP copy mode, and, when XDP is
// less than frags-aware native mode, why (xdp.Steering.Fallback).
type Modes interface {
	Modes() (xdpMode, xskMode string)
	XDPFallback() string
}

// Conn is one end of an established flow. It is used by one goroutine.
type Conn interface {
	// Send sends all of p: for a stream, bytes; for a datagram system, one
	// message. A spinning Send retries EAGAIN until the Bound is done.
	Send(p []byte) error
	// Recv receives into p: for a stream, at least one byte (io.EOF once
	// the peer closed); for a datagram system, one message.
	Recv(p []byte) (int, error)
	// CloseWrite ends the sending direction after what was sent: the
	// peer's Recv returns io.EOF once it has read everything. It does
	// nothing on a datagram system.
	CloseWrite() error
	// Close releases the end.
	Close() error
}

// DatagramConn can give up waiting for one message, so a lost datagram
// costs one transaction, not the run.
type DatagramConn interface {
	Conn
	// RecvUntil is Recv that returns ErrTimeout once t has passed.
	RecvUntil(p []byte, t time.Time) (int, error)
}

// Echoer is a server end that turns messages around without copying them
// out; the ping-pong workload uses it instead of Recv and Send.
type Echoer interface {
	// Echo returns every message to its sender until the Bound is done.
	Echo() error
}

// Batcher is a client end that can queue messages and send them together,
// as the raw AF_XDP path does (the kernel sends up to 32 frames per kick).
type Batcher interface {
	Queue(p []byte) error
	Flush() error
}

// Flooder is a datagram system measured in bulk too, as the floor under
// the streams' bulk figures: its client end queues messages of the
// largest size (MaxMessage) one way through Batcher, a batch per kick,
// and the bulk figure counts the payload received. It carries one flow at
// a time, so bulk runs over one connection only.
type Flooder interface {
	System
	// Flood marks the system; it does nothing.
	Flood()
}

// ErrTimeout is returned by RecvUntil when its deadline passes.
var ErrTimeout = errors.New("bench: receive timed out")

// recvFull reads exactly len(p) bytes from a stream: io.EOF when the
// stream ended before the first, io.ErrUnexpectedEOF after it.
func recvFull(c Conn, p []byte) error {
	for got := 0; got < len(p); {
		n, err := c.Recv(p[got:])
		got += n
		if err == io.EOF && got > 0 && got < len(p) {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Systems returns every system in table order: sdx first, then the
// references, then the floor.
func Systems() []System {
	return []System{
		newSwitchSystem("sdx-conn", provider.PollDefault),
		newSwitchSystem("sdx-conn-adaptive", provider.PollAdaptive),
		&sdxConnSystem{name: "sdx-conn-1q", queues: []int{0}},
		&sdxConnSystem{name: "sdx-conn-2poll", pollers: 2},
		newSDX("sdx-busy", provider.PollBusy),
		newSDX("sdx-adaptive", provider.PollAdaptive),
		&gonetSystem{},
		newTwoProc("sdx-conn"),
		newTwoProc("sdx-conn-2poll"),
		newTwoProc("tcp-gonet"),
		&tcpSpinSystem{},
		&udpSpinSystem{},
		newXSK("xsk-floor", false),
		newXSK("xsk-floor-park", true),
		&xskSystem{name: "xsk-floor-sf", whole: true},
		&xskTwoProc{},
	}
}

// Lookup returns the named system.
func Lookup(name string) (System, bool) {
	for _, s := range Systems() {
		if s.Name() == name {
			return s, true
		}
	}
	return nil, false
}
