package sdx

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// DefaultProbeTimeout is how long Dial waits for an sdx peer to answer a
// connect request before it decides the peer does not speak sdx and falls
// back to kernel TCP. An sdx peer answers within a round trip (tens of
// microseconds on a veth pair), retransmitted connect requests included
// (the provider's first retransmission comes after 10ms).
const DefaultProbeTimeout = 50 * time.Millisecond

// Dialer holds the options of a dial. The zero value dials over the open
// stack whose subnet holds the destination, falls back to kernel TCP, and
// has no timeout but the context's.
type Dialer struct {
	// Stack is the stack to dial from. Nil picks the first open stack
	// whose subnet holds the destination; with none, Dial uses kernel TCP
	// in the caller's namespace.
	Stack *Stack
	// ProbeTimeout is how long an sdx connect may go unanswered before the
	// dial falls back to kernel TCP (default DefaultProbeTimeout).
	ProbeTimeout time.Duration
	// DisableFallback makes the dial sdx only: the connect waits for the
	// provider's answer (or its Config.Timeout, or the context) and an
	// unreachable destination is an error.
	DisableFallback bool
	// Timeout bounds the whole dial, as net.Dialer.Timeout (zero: none).
	Timeout time.Duration
	// KeepAlive is the keep-alive period of a kernel TCP connection, as
	// net.Dialer.KeepAlive (zero: Go's default, 15s; negative: off). sdx
	// connections always detect a dead peer, within the provider's
	// Config.Timeout.
	KeepAlive time.Duration
}

// Dial connects to address ("host:port") over sdx when the route leaves
// through an sdx stack's interface and the peer answers, over kernel TCP
// otherwise. network must be "tcp" or "tcp4". The result is a *Conn.
func Dial(network, address string) (net.Conn, error) {
	var d Dialer
	return d.DialContext(context.Background(), network, address)
}

// DialContext is Dial with a context: cancelling it before the connection
// is made aborts the dial.
func DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var d Dialer
	return d.DialContext(ctx, network, address)
}

// Dial is DialContext with a background context.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext connects to address. The path is chosen as in Windows
// Sockets Direct:
//
//   - the destination's route must leave through the stack's interface,
//     else kernel TCP;
//   - an sdx connect answered with a connection (PathSDX), or with a
//     refusal, reset or "host unreachable", is final: those answers come
//     from an sdx peer, and TCP would fail the same way;
//   - no answer within ProbeTimeout, an ICMP port unreachable from the
//     peer's kernel (no sdx stack there; provider.ErrPortUnreach), or a
//     failure to set up the sdx socket, falls back to kernel TCP
//     (PathTCP), from the stack's namespace.
//
// Cancelling ctx aborts either attempt; the error then matches ctx.Err().
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.dial(ctx, network, address)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return nil, err
		}
		return nil, &net.OpError{Op: "dial", Net: network, Addr: addrOf(address), Err: err}
	}
	return c, nil
}

func (d *Dialer) dial(ctx context.Context, network, address string) (*Conn, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, net.UnknownNetworkError(network)
	}
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	st := d.Stack
	why := FallbackNoStack
	dst, err := resolve(ctx, address)
	switch {
	case errors.Is(err, errNotIPv4):
		dst = netip.AddrPort{} // kernel TCP only
		why = FallbackNotIPv4
	case err != nil:
		return nil, err
	}
	if st == nil && dst.IsValid() {
		st = stackFor(dst.Addr())
	}
	if st != nil && dst.IsValid() {
		why = FallbackNoRoute
		if st.closed.Load() {
			why = FallbackStackClosed
		}
	}
	if st != nil && dst.IsValid() && st.Routes(dst.Addr()) {
		probe := d.ProbeTimeout
		if probe <= 0 {
			probe = DefaultProbeTimeout
		}
		if d.DisableFallback || !st.kernel {
			probe = 0 // nothing to fall back to: wait for the answer
		}
		c, err := st.dialSDX(ctx, dst, probe)
		switch {
		case err == nil:
			return c, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case final(err), d.DisableFallback, !st.kernel:
			// A Link stack has nothing to fall back to: its error is
			// the real cause (no answer, port 0, out of sockets).
			return nil, err
		}
		// No answer, or the SAN socket could not be set up: fall back.
		why = whyNot(err)
	}
	if d.DisableFallback {
		return nil, syscall.ENETUNREACH
	}
	if st != nil && !st.kernel {
		return nil, ErrNoStack
	}
	nd := &net.Dialer{KeepAlive: d.KeepAlive}
	var kc net.Conn
	switch {
	case st != nil:
		kc, err = st.kernelDial(ctx, nd, dst.String())
	default:
		kc, err = nd.DialContext(ctx, network, address)
	}
	if err != nil {
		return nil, err
	}
	c := &Conn{tcp: kc.(*net.TCPConn), why: why}
	if st != nil {
		st.fallbacks.add(why)
		st.trackTCP(c)
	} else {
		stackless.add(why)
	}
	return c, nil
}

var errNotIPv4 = errors.New("sdx: not an IPv4 destination")

// resolve turns "host:port" into an IPv4 address and port.
func resolve(ctx context.Context, address string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(address); err == nil {
		if !ap.Addr().Unmap().Is4() {
			return netip.AddrPort{}, errNotIPv4
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		if port, err = lookupPort(ctx, portStr); err != nil {
			return netip.AddrPort{}, err
		}
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, errNotIPv4
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), nil
}

func addrOf(address string) net.Addr {
	if ap, err := netip.ParseAddrPort(address); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return nil
}

// dialSDX makes one sdx connect to dst. It waits for the provider's
// answer, for probe (when positive) or for ctx; it returns errNoAnswer when
// the probe time passes.
func (s *Stack) dialSDX(ctx context.Context, dst netip.AddrPort, probe time.Duration) (*Conn, error) {
	sh := s.shardFor()
	p := sh.p
	sock, err := p.Socket()
	if err != nil {
		return nil, err
	}
	c := newSConn(sh, sock)
	if err := p.PostConnect(sock, dst, sh.cq, c.ctx(tagConnect)); err != nil {
		c.abort()
		return nil, err
	}
	var expire <-chan time.Time
	if probe > 0 {
		t := time.NewTimer(probe)
		defer t.Stop()
		expire = t.C
	}
	select {
	case <-c.cdone:
		if err := c.cres.err; err != nil {
			c.abort()
			return nil, err
		}
	case <-expire:
		c.abort() // completes the connect, aborted
		return nil, errNoAnswer
	case <-ctx.Done():
		c.abort()
		return nil, ctx.Err()
	}
	local, err := p.GetSockName(sock)
	if err == nil {
		err = c.start(local, dst)
	}
	if err != nil {
		c.abort()
		return nil, err
	}
	return &Conn{s: c}, nil
}
