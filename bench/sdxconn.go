package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/provider"
)

// sdxConnSystem is sdx as an application gets it: a Stack in each
// namespace, sdx.ListenConfig and sdx.Dialer, then plain net.Conn Read and
// Write, exactly as the README shows. Nothing is pinned, as in any program
// using net; the provider polls in the stack's default mode (sdx-conn:
// sdx.DefaultPollMode) or in the mode named (sdx-conn-adaptive). The
// stacks serve every queue of the interface, or queue 0 alone
// (sdx-conn-1q), to compare the two on a testbed with several queues;
// sdx-conn-2poll serves them with two pollers (sdx.Config.Pollers), on a
// testbed with at least two queues (sdxbench -queues 2).
type sdxConnSystem struct {
	name    string
	mode    provider.PollMode
	queues  []int // the queues the stacks serve; nil: every queue
	pollers int
	h       *Hosts
	st      [2]*sdx.Stack // on A, on B

	xdpMode, xskMode string
}

func newSwitchSystem(name string, mode provider.PollMode) *sdxConnSystem {
	return &sdxConnSystem{name: name, mode: mode}
}

func (s *sdxConnSystem) Name() string                     { return s.name }
func (s *sdxConnSystem) Queues() int                      { return max(s.pollers, 1) }
func (*sdxConnSystem) Kind() Kind                         { return Stream }
func (*sdxConnSystem) MaxMessage(int) int                 { return 0 }
func (*sdxConnSystem) Pinned() bool                       { return false }
func (s *sdxConnSystem) Modes() (xdpMode, xskMode string) { return s.xdpMode, s.xskMode }

func (s *sdxConnSystem) Open(h *Hosts) (err error) {
	s.h = h
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("%s: %w", s.name, err), s.Close())
		}
	}()
	for i, host := range []*testbed.Host{&h.A, &h.B} {
		if s.st[i], err = openStack(host, s.mode, s.queues, s.pollers); err != nil {
			return err
		}
		if i == 0 {
			if ls := s.st[i].LinkStats(); len(ls.Queues) > 0 {
				s.xdpMode, s.xskMode = ls.XDPMode.String(), ls.Queues[0].ModeReport
			}
		}
	}
	return nil
}

// NoControlEnv names the environment variable that, set to 1, opens the
// stacks of the sdx-conn systems without their control socket
// (sdx.Config.NoControl), in this process and in two-process children:
// for measuring what serving it costs while nobody reads it.
const NoControlEnv = "SDXBENCH_NO_CONTROL"

// openStack starts a stack with pollers pollers on host, retrying the
// short EBUSY that follows the close of a previous socket on the same
// queue.
func openStack(host *testbed.Host, mode provider.PollMode, queues []int, pollers int) (*sdx.Stack, error) {
	deadline := time.Now().Add(busyRetry)
	noControl := os.Getenv(NoControlEnv) == "1"
	for {
		st, err := sdx.NewStack(sdx.Config{Netns: host.NS, Interface: host.If, Queues: queues, Pollers: pollers, Provider: provider.Config{Mode: mode}, NoControl: noControl})
		if err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return st, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sdxConnSystem) Close() error {
	var errs []error
	for i, st := range s.st {
		if st != nil {
			errs = append(errs, st.Close())
			s.st[i] = nil
		}
	}
	return errors.Join(errs...)
}

func (s *sdxConnSystem) Pair(b *Bound) (client, server Conn, err error) {
	return pairByListen(s, s.h, b)
}

func (s *sdxConnSystem) Listen(b *Bound) (Listener, error) {
	ln, _, err := s.NetListen(b)
	if err != nil {
		return nil, err
	}
	l := &sdxConnListener{name: s.name, ln: ln, st: s.st[0], b: b}
	l.unhook = b.OnStop(func() { ln.Close() })
	return l, nil
}

// NetListen gives net/http an sdx listener in B and a dialer in A, both
// sdx only.
func (s *sdxConnSystem) NetListen(b *Bound) (net.Listener, func() (net.Conn, error), error) {
	if s.st[1] == nil {
		return nil, nil, fmt.Errorf("%s: not open", s.name)
	}
	lc := sdx.ListenConfig{Stack: s.st[1], DisableFallback: true}
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(s.h.B.Addr.String(), "0"))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: listen: %w", s.name, err)
	}
	d := sdx.Dialer{Stack: s.st[0], DisableFallback: true}
	addr := ln.Addr().String()
	return ln, func() (net.Conn, error) { return d.Dial("tcp", addr) }, nil
}

type sdxConnListener struct {
	name   string
	ln     net.Listener
	st     *sdx.Stack // the dialing side's
	b      *Bound
	unhook func()
}

func (l *sdxConnListener) Accept() (Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, netErr(l.name, l.b, err)
	}
	return newNetConn(l.name, c, l.b), nil
}

func (l *sdxConnListener) Dial() (Conn, error) {
	d := sdx.Dialer{Stack: l.st, DisableFallback: true}
	c, err := d.Dial("tcp", l.ln.Addr().String())
	if err != nil {
		return nil, netErr(l.name, l.b, err)
	}
	if p := c.(*sdx.Conn).Path(); p != sdx.PathSDX {
		c.Close()
		return nil, fmt.Errorf("%s: the dial took path %s", l.name, p)
	}
	return newNetConn(l.name, c, l.b), nil
}

func (l *sdxConnListener) Close() error {
	l.unhook()
	return l.ln.Close()
}
