package bench

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/xdp"
)

// xskTwoProc is xsk-floor-2p: the floor of xsk-floor-park with its server
// end in a child process (twoproc.go) in B. Both ends are one goroutine
// each, nothing pinned, parked in the netpoller while their rx ring is
// empty. The child turns frames around (rr), or counts them while the
// parent has it sink (msgrate, bulk).
type xskTwoProc struct {
	h     *Hosts
	steer *xdp.Steering
	q     *xdp.Queue
	flow  frame.Flow
	child *childProc

	xdpMode, xskMode, xdpFallback string
}

func (*xskTwoProc) Name() string              { return "xsk-floor-2p" }
func (*xskTwoProc) Kind() Kind                { return Datagram }
func (*xskTwoProc) Pinned() bool              { return false }
func (*xskTwoProc) MaxMessage(mtu int) int    { return FrameMessage(mtu) }
func (*xskTwoProc) Flood()                    {}
func (s *xskTwoProc) Modes() (string, string) { return s.xdpMode, s.xskMode }
func (s *xskTwoProc) XDPFallback() string     { return s.xdpFallback }

func (s *xskTwoProc) Open(h *Hosts) (err error) {
	s.h = h
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("xsk-floor-2p: %w", err), s.Close())
		}
	}()
	mtu, err := h.MTU()
	if err != nil {
		return err
	}
	if s.steer, s.q, err = openFloorEnd(&h.A, mtu); err != nil {
		return err
	}
	s.xdpMode, s.xskMode = s.steer.Mode().String(), s.q.ModeReport()
	s.xdpFallback = s.steer.Fallback()
	s.flow = floorFlow(h)
	s.child, err = startChild(fmt.Sprintf("xsk-floor %s %s %s", h.B.NS, h.B.If, h.B.Addr))
	return err
}

func (s *xskTwoProc) Close() error {
	var errs []error
	if s.child != nil {
		errs = append(errs, s.child.stop())
		s.child = nil
	}
	if s.q != nil {
		errs = append(errs, s.q.Close())
		s.q = nil
	}
	if s.steer != nil {
		errs = append(errs, s.steer.Close())
		s.steer = nil
	}
	return errors.Join(errs...)
}

// Pair returns the client end only: the server end is the child's.
func (s *xskTwoProc) Pair(b *Bound) (client, server Conn, err error) {
	if s.q == nil {
		return nil, nil, errors.New("xsk-floor-2p: not open")
	}
	drain(s.q)
	return newXSKConn(s.q, s.flow, b, true), nil, nil
}

// DialSink is the client end: the child sinks while asked to.
func (s *xskTwoProc) DialSink(b *Bound) (Conn, error) {
	c, _, err := s.Pair(b)
	return c, err
}

func (s *xskTwoProc) ResetSink(size int) error { return s.child.resetSink(size) }

func (s *xskTwoProc) DrainSink(n int64, wait time.Duration) (SinkReport, error) {
	return s.child.drainSink(n, wait)
}

func (s *xskTwoProc) ExtraCPU() (int64, error) { return s.child.extraCPU() }
func (s *xskTwoProc) ChildPID() int            { return s.child.pid }

// serveFloor is the child's floor end: the steer program and a queue on
// host, and one goroutine that echoes or sinks until stop.
func serveFloor(host *testbed.Host, k *sink, b *Bound) (stop func() error, err error) {
	mtu := 0
	if err := host.Do(func() error {
		ifi, err := net.InterfaceByName(host.If)
		if err == nil {
			mtu = ifi.MTU
		}
		return err
	}); err != nil {
		return nil, err
	}
	st, q, err := openFloorEnd(host, mtu)
	if err != nil {
		return nil, err
	}
	c := newXSKConn(q, frame.Flow{}, b, true)
	done := make(chan error, 1)
	go func() { done <- c.serve(k) }()
	return func() error {
		b.Stop()
		err := <-done
		if ended(err) {
			err = nil
		}
		return errors.Join(err, c.Close(), q.Close(), st.Close())
	}, nil
}
