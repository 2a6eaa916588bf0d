package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/xdp"
)

// XSKPort is the UDP port of the floor's frames; the steer program sends
// frames to it into the AF_XDP queues and everything else to the kernel.
const XSKPort = 4792

// xskSystem is the floor: one AF_XDP queue on each end, the steer program
// on both veth ends, and no protocol. The client builds an
// Ethernet/IPv4/UDP frame around its message; the server swaps the
// addresses and sends the same frame back. A message is one frame, so at
// most FrameMessage(mtu) bytes; a frame longer than a UMEM frame is a
// multi-buffer packet of several.
//
// As xsk-floor its ends spin on pinned threads. As xsk-floor-park (park)
// nothing is pinned and each end is one goroutine that, when its rx ring
// is empty, parks in Go's netpoller on its AF_XDP socket (xdp.Queue.Wait)
// until a frame arrives: it waits the way sdx's park mode does, so that
// every sdx-conn figure has a floor that waits the same way.
//
// As xsk-floor-sf (whole) its server turns a message of several frames
// around only once all of them are in (store and forward), as a stream
// server does that reads the whole request before it answers, where
// xsk-floor turns each frame around as it comes (cut through).
type xskSystem struct {
	name  string
	park  bool
	whole bool
	h     *Hosts
	steer [2]*xdp.Steering
	q     [2]*xdp.Queue
	flow  frame.Flow // A to B

	// What the kernel granted, for the report.
	xdpMode, xskMode, xdpFallback string
}

func newXSK(name string, park bool) *xskSystem { return &xskSystem{name: name, park: park} }

func (s *xskSystem) Name() string { return s.name }
func (*xskSystem) Kind() Kind     { return Datagram }
func (s *xskSystem) Pinned() bool { return !s.park }

func (*xskSystem) MaxMessage(mtu int) int { return FrameMessage(mtu) }

// Flood: the floor's bulk is raw frames of FrameMessage bytes, 32 per kick.
func (*xskSystem) Flood() {}

// umemFrameMax is the largest UMEM frame an xdp.Queue takes
// (xdp.Config.FrameSize); a queue picks it above MTU xdp.MaxMTU2048.
const umemFrameMax = 4096

// FrameMessage is the largest message one floor frame carries over a link
// of the given MTU, and so the size of the floor's bulk frames: the MTU
// less the IPv4 and UDP headers, within what a multi-buffer packet of
// UMEM frames holds (xdp.MaxPacketLen). Where the kernel lacks
// multi-buffer frames, a queue receives one UMEM frame's worth (3840
// bytes of Ethernet frame) and the floor refuses larger MTUs, saying why.
func FrameMessage(mtu int) int {
	return min(mtu, xdp.MaxPacketLen(umemFrameMax)-frame.EthLen) - frame.IPv4Len - frame.UDPLen
}

// Modes reports the XDP attach mode and the AF_XDP copy mode the kernel
// granted; empty before Open.
func (s *xskSystem) Modes() (xdpMode, xskMode string) { return s.xdpMode, s.xskMode }
func (s *xskSystem) XDPFallback() string              { return s.xdpFallback }

func (s *xskSystem) Open(h *Hosts) (err error) {
	s.h = h
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("%s: %w", s.name, err), s.Close())
		}
	}()
	mtu, err := h.MTU()
	if err != nil {
		return err
	}
	for i, host := range []*testbed.Host{&h.A, &h.B} {
		if s.steer[i], s.q[i], err = openFloorEnd(host, mtu); err != nil {
			return err
		}
	}
	s.xdpMode, s.xskMode = s.steer[0].Mode().String(), s.q[0].ModeReport()
	s.xdpFallback = s.steer[0].Fallback()
	s.flow = floorFlow(h)
	return nil
}

// floorFlow is the floor's flow from A to B.
func floorFlow(h *Hosts) frame.Flow {
	return frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(h.A.MAC), IP: h.A.Addr, Port: XSKPort},
		Dst: frame.Endpoint{MAC: [6]byte(h.B.MAC), IP: h.B.Addr, Port: XSKPort},
	}
}

// openFloorEnd attaches the steer program to host's interface and opens
// and registers an AF_XDP queue there that takes frames of the MTU. On
// failure it closes what it opened.
func openFloorEnd(host *testbed.Host, mtu int) (st *xdp.Steering, q *xdp.Queue, err error) {
	if st, err = xdp.AttachSteer(xdp.SteerConfig{Netns: host.NS, Interface: host.If, Port: XSKPort}); err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			if q != nil {
				err = errors.Join(err, q.Close())
			}
			err = errors.Join(err, st.Close())
			st, q = nil, nil
		}
	}()
	if q, err = openQueue(host); err != nil {
		return st, nil, err
	}
	if err := st.Register(q); err != nil {
		return st, q, err
	}
	if n := frame.HeaderLen + FrameMessage(mtu); n > q.MaxFrameLen() {
		return st, q, fmt.Errorf("%s: the queue receives frames of at most %d bytes, not the %d of MTU %d (AF_XDP %s)",
			host.If, q.MaxFrameLen(), n, mtu, q.ModeReport())
	}
	return st, q, nil
}

// openQueue opens an AF_XDP queue on host, retrying the short EBUSY that
// follows the close of a previous socket on the same queue.
func openQueue(host *testbed.Host) (*xdp.Queue, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		q, err := xdp.Open(xdp.Config{Netns: host.NS, Interface: host.If})
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return q, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *xskSystem) Close() error {
	var errs []error
	for i := range s.q {
		if s.q[i] != nil {
			errs = append(errs, s.q[i].Close())
			s.q[i] = nil
		}
		if s.steer[i] != nil {
			errs = append(errs, s.steer[i].Close())
			s.steer[i] = nil
		}
	}
	return errors.Join(errs...)
}

// Pair returns an end on each queue. There is one queue per host, so one
// pair at a time; frames a previous run left behind are dropped first.
func (s *xskSystem) Pair(b *Bound) (client, server Conn, err error) {
	if s.q[0] == nil {
		return nil, nil, fmt.Errorf("%s: not open", s.name)
	}
	for _, q := range s.q {
		drain(q)
	}
	server = newXSKConn(s.q[1], s.flow.Reverse(), b, s.park)
	server.(*xskConn).whole = s.whole
	return newXSKConn(s.q[0], s.flow, b, s.park), server, nil
}

// drain releases what sits on q's rx ring and takes back completed sends.
func drain(q *xdp.Queue) {
	var descs [64]xdp.Desc
	for {
		n := q.Receive(descs[:])
		q.ReleasePacket(descs[:n])
		q.Complete()
		q.Refill()
		if n == 0 {
			return
		}
	}
}

// xskConn is one end of the floor on one queue. Its goroutine owns the
// queue while the run lasts. It spins, or with park waits in the
// netpoller (xdp.Queue.Wait); any goroutine may wake that wait, and the
// Bound's stop does.
type xskConn struct {
	q      *xdp.Queue
	flow   frame.Flow
	b      *Bound
	park   bool
	unhook func() // park: takes the Bound's wake-up back

	rx       [64]xdp.Desc // received packets, handed out one by one
	nrx, nxt int
	tx       [txBatch * xdp.MaxPacketFrames]xdp.Desc // built packets, not yet on the tx ring
	ntx, npk int                                     // descriptors and packets in tx
	parsed   frame.Parsed
	ipID     uint16

	// Store and forward (xsk-floor-sf): the frames of the message being
	// gathered, its sequence number and bytes so far.
	whole  bool
	msg    []xdp.Desc
	msgSeq uint64
	msgGot int
}

// txBatch is how many frames go out per kick: the kernel's batch.
const txBatch = 32

func newXSKConn(q *xdp.Queue, flow frame.Flow, b *Bound, park bool) *xskConn {
	c := &xskConn{q: q, flow: flow, b: b, park: park}
	if park {
		c.unhook = b.OnStop(q.Wake)
	}
	return c
}

// rxWait is called when the rx ring was found empty: it spins (one look
// at the Bound per spinCheck calls), or with park parks the goroutine in
// the netpoller until a frame arrives, the Bound stops or until passes.
// It returns ErrStopped once the Bound is done, ErrTimeout once until
// has passed.
func (c *xskConn) rxWait(s *spinner, until time.Time) error {
	if !c.park {
		return s.wait(c.b, until)
	}
	if c.b.Stopped() {
		return ErrStopped
	}
	now, end := time.Now(), c.b.deadline
	if now.After(end) {
		return ErrStopped
	}
	if until.Before(end) {
		end = until
	}
	if now.After(end) {
		return ErrTimeout
	}
	_, err := c.q.Wait(end.Sub(now))
	return err
}

// txPause is how long a parked end sleeps when the tx ring or the frame
// pool is full after a kick. In copy mode the kick sends synchronously,
// so this is rare; the sleep is on a runtime timer, not a spin.
const txPause = 20 * time.Microsecond

// txWait is called when no frame could be queued or sent: it spins, or
// with park sleeps for txPause.
func (c *xskConn) txWait(s *spinner) error {
	if !c.park {
		return s.wait(c.b, c.b.deadline)
	}
	if c.b.Done() {
		return ErrStopped
	}
	time.Sleep(txPause)
	return nil
}

func (c *xskConn) Send(p []byte) error {
	if err := c.Queue(p); err != nil {
		return err
	}
	return c.Flush()
}

// Queue builds a frame carrying p; it goes out at the next Flush, or now
// when txBatch frames (the kernel's batch per kick) are waiting.
func (c *xskConn) Queue(p []byte) error {
	var s spinner
	for {
		chain, ok := c.q.AllocPacket(c.tx[c.ntx:c.ntx], frame.HeaderLen+len(p))
		if ok {
			c.ipID++
			c.flow.Encode(c.q.Data(chain[0]), len(p), c.ipID)
			c.q.WritePacket(chain, frame.HeaderLen, p)
			c.ntx += len(chain)
			if c.npk++; c.npk == txBatch {
				return c.Flush()
			}
			return nil
		}
		if c.ntx > 0 {
			if err := c.Flush(); err != nil {
				return err
			}
		}
		c.q.Complete()
		if err := c.txWait(&s); err != nil {
			return err
		}
	}
}

// Flush puts the built frames on the tx ring and kicks the kernel.
func (c *xskConn) Flush() error {
	var s spinner
	sent := 0
	for sent < c.ntx {
		k := c.q.Transmit(c.tx[sent:c.ntx])
		sent += k
		if err := c.q.Kick(); err != nil {
			c.dropTx(sent)
			return err
		}
		c.q.Complete()
		if k == 0 {
			if err := c.txWait(&s); err != nil {
				c.dropTx(sent)
				return err
			}
		}
	}
	c.ntx, c.npk = 0, 0
	return nil
}

// dropTx releases the built frames from index i on.
func (c *xskConn) dropTx(i int) {
	c.q.ReleasePacket(c.tx[i:c.ntx])
	c.ntx, c.npk = 0, 0
}

// packet parses the headers of the packet whose chain begins at c.rx[i]
// (and ends before c.rx[end]) into c.parsed and returns the chain's length
// and the payload's.
func (c *xskConn) packet(i, end int) (k, plen int, err error) {
	k, n := xdp.Chain(c.rx[i:end])
	plen, err = frame.ParseHead(c.q.Data(c.rx[i]), n, &c.parsed)
	return k, plen, err
}

func (c *xskConn) Recv(p []byte) (int, error) { return c.RecvUntil(p, c.b.deadline) }

func (c *xskConn) RecvUntil(p []byte, t time.Time) (int, error) {
	var s spinner
	for {
		for c.nxt < c.nrx {
			i := c.nxt
			k, plen, err := c.packet(i, c.nrx)
			c.nxt += k
			n := copy(p, c.parsed.Payload)
			for _, d := range c.rx[i+1 : i+k] {
				n += copy(p[n:min(plen, len(p))], c.q.Data(d))
			}
			c.q.ReleasePacket(c.rx[i : i+k])
			if err == nil && c.parsed.Flow.Dst.Port == XSKPort {
				return n, nil
			}
		}
		c.q.Refill()
		c.nrx, c.nxt = c.q.Receive(c.rx[:]), 0
		if c.nrx == 0 {
			c.q.Complete()
			if err := c.rxWait(&s, t); err != nil {
				return 0, err
			}
		}
	}
}

// Echo turns every frame around in place, as cmd/sdx's demo does: swap
// the addresses, put the same frame on the tx ring; with whole, once the
// message's last frame is in.
func (c *xskConn) Echo() error {
	if c.whole {
		return c.serveWhole()
	}
	return c.serve(nil)
}

// serveWhole is Echo's store and forward: it keeps the frames of a
// message (they carry its sequence number and total length; see
// transactParts) until they add up to the message, then turns them all
// around with one kick. Frames of a message that lost one are dropped
// when the next message begins.
func (c *xskConn) serveWhole() error {
	var s spinner
	for {
		n, err := c.receiveWait(&s)
		if err != nil {
			c.q.ReleasePacket(c.msg)
			c.msg = c.msg[:0]
			return err
		}
		for i := 0; i < n; {
			k, plen, err := c.packet(i, n)
			p := c.parsed.Payload
			if err != nil || c.parsed.Flow.Dst.Port != XSKPort || len(p) < 8 {
				c.q.ReleasePacket(c.rx[i : i+k])
				i += k
				continue
			}
			if seq := binary.LittleEndian.Uint64(p); seq != c.msgSeq || len(c.msg) == 0 {
				c.q.ReleasePacket(c.msg)
				c.msg, c.msgSeq, c.msgGot = c.msg[:0], seq, 0
			}
			want := plen // a message too short to say its length is one frame
			if len(p) >= 16 {
				want = int(binary.LittleEndian.Uint64(p[8:]))
			}
			rev := c.parsed.Flow.Reverse()
			rev.Encode(c.q.Data(c.rx[i]), plen, 0)
			c.msg = append(c.msg, c.rx[i:i+k]...)
			c.msgGot += plen
			i += k
			if c.msgGot >= want {
				if err := c.sendMsg(); err != nil {
					return err
				}
			}
		}
		c.q.Refill()
	}
}

// sendMsg puts the gathered message's frames on the tx ring and kicks.
func (c *xskConn) sendMsg() error {
	q := c.q.Transmit(c.msg)
	c.q.ReleasePacket(c.msg[q:])
	c.msg, c.msgGot = c.msg[:0], 0
	if err := c.q.Kick(); err != nil {
		return err
	}
	c.q.Complete()
	return nil
}

// echoBatch turns around the n descriptors just received into c.rx.
func (c *xskConn) echoBatch(n int) error {
	out := 0
	for i := 0; i < n; {
		k, plen, err := c.packet(i, n)
		if err != nil {
			c.q.ReleasePacket(c.rx[i : i+k])
			i += k
			continue
		}
		rev := c.parsed.Flow.Reverse()
		rev.Encode(c.q.Data(c.rx[i]), plen, 0)
		out += copy(c.rx[out:], c.rx[i:i+k])
		i += k
	}
	q := c.q.Transmit(c.rx[:out])
	c.q.ReleasePacket(c.rx[q:out])
	if err := c.q.Kick(); err != nil {
		return err
	}
	c.q.Complete()
	c.q.Refill()
	return nil
}

// receiveWait takes what the rx ring holds into c.rx and returns how
// many descriptors that was, waiting (rxWait) while the ring is empty.
func (c *xskConn) receiveWait(s *spinner) (int, error) {
	for {
		if n := c.q.Receive(c.rx[:]); n > 0 {
			return n, nil
		}
		c.q.Complete()
		c.q.Refill()
		if err := c.rxWait(s, c.b.deadline); err != nil {
			return 0, err
		}
	}
}

// serve turns every frame around (Echo), or, in the floor's server end
// in a child process while k is on, counts each frame for the floor's
// port (as Recv would return it) and releases it.
func (c *xskConn) serve(k *sink) error {
	var s spinner
	for {
		n, err := c.receiveWait(&s)
		if err != nil {
			return err
		}
		if k == nil || !k.on.Load() {
			if err := c.echoBatch(n); err != nil {
				return err
			}
			continue
		}
		for i := 0; i < n; {
			j, plen, err := c.packet(i, n)
			if err == nil && c.parsed.Flow.Dst.Port == XSKPort {
				k.add(plen)
			}
			c.q.ReleasePacket(c.rx[i : i+j])
			i += j
		}
		c.q.Refill()
	}
}

// CloseWrite does nothing: the floor has no streams.
func (c *xskConn) CloseWrite() error { return nil }

// Close gives back every frame the end still holds.
func (c *xskConn) Close() error {
	if c.unhook != nil {
		c.unhook()
		c.unhook = nil
	}
	c.q.ReleasePacket(c.rx[c.nxt:c.nrx])
	c.nxt, c.nrx = 0, 0
	c.dropTx(0)
	c.q.Complete()
	return nil
}
