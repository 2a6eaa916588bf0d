package xdplink

import (
	"errors"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/ring"
	"github.com/sdx-project/sdx/xdp"
)

// Capture records the frames a Link sends and receives, whole
// (Ethernet header first), for `sdx capture`. The poller is its only
// producer: it copies each frame into a free slot of a fixed set, or
// counts it dropped when none is free; one goroutine at a time consumes
// (Next, Release). While no capture runs the link pays one atomic load
// per frame; StartCapture and Stop may be called from any goroutine.
type Capture struct {
	link    *Link
	snaplen int
	slots   []captureSlot
	free    *ring.SPSC[uint32] // consumer -> producer
	full    *ring.SPSC[uint32] // producer -> consumer

	captured, dropped atomic.Uint64
	held              int32 // consumer's: the slot Next returned, -1: none
}

type captureSlot struct {
	frame CapturedFrame
	buf   []byte
}

// CapturedFrame is one frame as the link saw it.
type CapturedFrame struct {
	Time time.Time
	Sent bool   // sent by the link; false: received
	Len  int    // the frame's length on the wire
	Data []byte // its first bytes, at most the capture's snaplen; valid until Release
}

// Capture limits.
const (
	DefaultCaptureSnaplen = 65535
	DefaultCaptureFrames  = 4096
)

// ErrCaptureBusy is StartCapture's error while another capture runs.
var ErrCaptureBusy = errors.New("xdplink: a capture is already running on this link")

// StartCapture begins recording up to frames frames at a time of at
// most snaplen bytes each (0: the defaults); the caller must Stop it.
func (l *Link) StartCapture(frames, snaplen int) (*Capture, error) {
	if frames <= 0 {
		frames = DefaultCaptureFrames
	}
	if snaplen <= 0 {
		snaplen = DefaultCaptureSnaplen
	}
	frames = 1 << bits.Len(uint(frames-1)) // a power of two, for the rings
	c := &Capture{link: l, snaplen: snaplen, slots: make([]captureSlot, frames), held: -1}
	var err error
	if c.free, err = ring.NewSPSC[uint32](frames); err != nil {
		return nil, configErr("capture of %d frames: %v", frames, err)
	}
	if c.full, err = ring.NewSPSC[uint32](frames); err != nil {
		return nil, configErr("capture of %d frames: %v", frames, err)
	}
	for i := range c.slots {
		c.slots[i].buf = make([]byte, snaplen)
		c.free.Push(uint32(i))
	}
	if !l.tap.CompareAndSwap(nil, c) {
		return nil, ErrCaptureBusy
	}
	return c, nil
}

// Stop ends the capture: the link records no more frames into it. What
// was recorded stays readable.
func (c *Capture) Stop() { c.link.tap.CompareAndSwap(c, nil) }

// Captured and Dropped count the frames recorded and those lost for want
// of a free slot (the consumer was too slow).
func (c *Capture) Captured() uint64 { return c.captured.Load() }
func (c *Capture) Dropped() uint64  { return c.dropped.Load() }

// Next returns the oldest recorded frame not yet taken, if any; the
// previous one is released.
func (c *Capture) Next() (CapturedFrame, bool) {
	c.Release()
	i, ok := c.full.Pop()
	if !ok {
		return CapturedFrame{}, false
	}
	c.held = int32(i)
	return c.slots[i].frame, true
}

// Release gives the frame Next returned back to the producer.
func (c *Capture) Release() {
	if c.held >= 0 {
		c.free.Push(uint32(c.held))
		c.held = -1
	}
}

// record copies a frame made of parts into a free slot; poller only.
func (c *Capture) record(sent bool, parts ...[]byte) {
	i, ok := c.free.Pop()
	if !ok {
		c.dropped.Add(1)
		return
	}
	s := &c.slots[i]
	n, total := 0, 0
	for _, p := range parts {
		n += copy(s.buf[n:], p)
		total += len(p)
	}
	s.frame = CapturedFrame{Time: time.Now(), Sent: sent, Len: total, Data: s.buf[:n]}
	c.full.Push(i)
	c.captured.Add(1)
}

// capture records the received packet whose chain is descs.
func (l *Link) capture(c *Capture, q *xdp.Queue, descs []xdp.Desc) {
	l.captureChain(c, false, q, descs)
}

// captureChain records the packet whose chain is descs, sent or received.
func (l *Link) captureChain(c *Capture, sent bool, q *xdp.Queue, descs []xdp.Desc) {
	var parts [xdp.MaxPacketFrames][]byte
	n := 0
	for _, d := range descs {
		if n == len(parts) {
			break
		}
		parts[n] = q.Data(d)
		n++
	}
	c.record(sent, parts[:n]...)
}

// CaptureState reports whether a capture runs on the link, and what it
// recorded and dropped so far; any goroutine.
func (l *Link) CaptureState() (running bool, captured, dropped uint64) {
	c := l.tap.Load()
	if c == nil {
		return false, 0, 0
	}
	return true, c.Captured(), c.Dropped()
}
