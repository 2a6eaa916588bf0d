package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/xdp"
)

// demoPort is the UDP port the demo's frames use.
const demoPort = 4791

// host is one end of the demo: its steering and queue.
type host struct {
	name  string
	steer *xdp.Steering
	q     *xdp.Queue
}

func demo(ctx context.Context, frames, size int, timeout time.Duration) (err error) {
	if frames <= 0 || size < 16 || size > 1458 {
		return errors.New("demo: -frames must be positive and -size in 16..1458")
	}
	start := time.Now()
	bed, err := testbed.Create(testbed.Options{})
	if err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	defer func() { err = errors.Join(err, bed.Close()) }()
	fmt.Printf("testbed: %s (%s %v) <-> %s (%s %v)\n", bed.A.NS, bed.A.If, bed.A.Addr, bed.B.NS, bed.B.If, bed.B.Addr)

	var hosts [2]*host
	for i, h := range []*testbed.Host{&bed.A, &bed.B} {
		hs := &host{name: h.If}
		if hs.steer, err = xdp.AttachSteer(xdp.SteerConfig{Netns: h.NS, Interface: h.If, Port: demoPort}); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, hs.steer.Close()) }()
		if hs.q, err = xdp.Open(xdp.Config{Netns: h.NS, Interface: h.If}); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, hs.q.Close()) }()
		if err := hs.steer.Register(hs.q); err != nil {
			return err
		}
		hosts[i] = hs
		fmt.Printf("%s: XDP %v, AF_XDP %v, %d frames of %d bytes\n", h.If, hs.steer.Mode(), hs.q.ModeReport(), hs.q.Pool().Len(), hs.q.FrameSize())
		if why := hs.steer.Fallback(); why != "" {
			fmt.Printf("%s: XDP fell back: %s\n", h.If, why)
		}
	}
	a, b := hosts[0], hosts[1]
	flow := frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(bed.A.MAC), IP: bed.A.Addr, Port: demoPort},
		Dst: frame.Endpoint{MAC: [6]byte(bed.B.MAC), IP: bed.B.Addr, Port: demoPort},
	}

	// A sends numbered frames, B turns each around in place, A checks the
	// numbers come back in order. The window keeps both below veth's
	// 256-frame ring.
	const window = 128
	var (
		sent, echoed, back int
		descs              [64]xdp.Desc
		p                  frame.Parsed
	)
	deadline := time.Now().Add(timeout)
	t0 := time.Now()
	for back < frames {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("demo stopped: sent %d, echoed %d, returned %d: %w", sent, echoed, back, cmp.Or(ctx.Err(), context.DeadlineExceeded))
		}
		if n := min(frames-sent, window-(sent-back), len(descs)); n > 0 {
			built := 0
			for ; built < n; built++ {
				f, ok := a.q.Alloc()
				if !ok {
					break
				}
				buf := a.q.Frame(f)
				binary.BigEndian.PutUint64(buf[frame.HeaderLen:], uint64(sent+built))
				descs[built] = xdp.Desc{Addr: a.q.Addr(f), Len: uint32(flow.Encode(buf, size, 0))}
			}
			q := a.q.Transmit(descs[:built])
			for _, d := range descs[q:built] {
				a.q.Release(a.q.FrameOf(d))
			}
			sent += q
			if err := a.q.Kick(); err != nil {
				return err
			}
		}
		// B: swap the addresses and send the frame straight back.
		if n := b.q.Receive(descs[:]); n > 0 {
			for i := range descs[:n] {
				buf := b.q.Data(descs[i])
				if err := frame.Parse(buf, &p); err != nil {
					return fmt.Errorf("B received a bad frame: %w", err)
				}
				rev := p.Flow.Reverse()
				rev.Encode(buf, len(p.Payload), 0)
			}
			q := b.q.Transmit(descs[:n])
			for _, d := range descs[q:n] {
				b.q.Release(b.q.FrameOf(d))
			}
			echoed += q
			if err := b.q.Kick(); err != nil {
				return err
			}
		}
		// A: check the echoes.
		n := a.q.Receive(descs[:])
		for _, d := range descs[:n] {
			buf := a.q.Data(d)
			if err := frame.Parse(buf, &p); err != nil {
				return fmt.Errorf("A received a bad frame: %w", err)
			}
			if seq := binary.BigEndian.Uint64(p.Payload); seq != uint64(back) {
				return fmt.Errorf("A received frame %d, expected %d", seq, back)
			}
			a.q.Release(a.q.FrameOf(d))
			back++
		}
		for _, h := range hosts {
			h.q.Complete()
			h.q.Refill()
		}
	}
	el := time.Since(t0)

	fmt.Printf("\n%d frames of %d bytes A->B->A in %v: %.0f round trips/s, %.2f Gbit/s each way\n\n",
		frames, frame.HeaderLen+size, el.Round(time.Millisecond), float64(frames)/el.Seconds(),
		float64(frames*(frame.HeaderLen+size)*8)/el.Seconds()/1e9)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "host\tsteer seen\tredirected\tno socket\tpassed\tmalformed\trx\ttx\tcompleted\tkicks\ttx dropped\trx ring full\trx dropped\t")
	for _, h := range hosts {
		ss, err := h.steer.Stats()
		if err != nil {
			return err
		}
		ks, err := h.q.KernelStats()
		if err != nil {
			return err
		}
		qs := h.q.Stats()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", h.name,
			ss.Seen, ss.Redirected, ss.NoSocket, ss.Passed, ss.Malformed,
			qs.RxFrames, qs.TxFrames, qs.Completed, qs.Kicks, qs.TxDropped, ks.RxRingFull, ks.RxDropped)
	}
	tw.Flush()
	for _, h := range hosts {
		if err := h.q.Pool().Check(); err != nil {
			return err
		}
		fmt.Printf("\n%s frames: %v", h.name, h.q.Pool())
	}
	fmt.Printf("\n\nframe accounting holds; tearing down (total %v)\n", time.Since(start).Round(time.Millisecond))
	return nil
}
