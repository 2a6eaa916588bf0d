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

// host is one end of the demo: its steering and a queue per rx queue.
type host struct {
	name  string
	steer *xdp.Steering
	qs    []*xdp.Queue
}

// demoConfig is what the demo's flags set.
type demoConfig struct {
	frames, size, queues, mtu int
	timeout                   time.Duration
}

func demo(ctx context.Context, c demoConfig) (err error) {
	frames, size, queues := c.frames, c.size, c.queues
	if c.mtu == 0 {
		c.mtu = 1500
	}
	if frames <= 0 || size < 16 || size > c.mtu-frame.IPv4Len-frame.UDPLen || queues < 1 || queues > 64 || c.mtu < 1280 || c.mtu > 65535 {
		return errors.New("demo: -frames must be positive, -mtu in 1280..65535, -size in 16..MTU-28 and -queues in 1..64")
	}
	start := time.Now()
	bed, err := testbed.Create(testbed.Options{Queues: queues, MTU: c.mtu})
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
		for qi := range queues {
			q, err := xdp.Open(xdp.Config{Netns: h.NS, Interface: h.If, Queue: qi})
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, q.Close()) }()
			if err := hs.steer.Register(q); err != nil {
				return err
			}
			hs.qs = append(hs.qs, q)
			fmt.Printf("%s queue %d: XDP %v, AF_XDP %v, %d frames of %d bytes\n", h.If, qi, hs.steer.Mode(), q.ModeReport(), q.Pool().Len(), q.FrameSize())
			if max := q.MaxFrameLen() - frame.HeaderLen; size > max {
				return fmt.Errorf("demo: -size %d: %s's queue carries at most %d", size, h.If, max)
			}
		}
		hosts[i] = hs
		if why := hs.steer.Fallback(); why != "" {
			fmt.Printf("%s: XDP fell back: %s\n", h.If, why)
		}
	}
	a, b := hosts[0], hosts[1]
	flow := frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(bed.A.MAC), IP: bed.A.Addr, Port: demoPort},
		Dst: frame.Endpoint{MAC: [6]byte(bed.B.MAC), IP: bed.B.Addr, Port: demoPort},
	}

	// A sends numbered frames, frame k on queue k mod queues (veth hands
	// it to B's queue of the same number), B turns each around in place on
	// the queue it came in on, A checks that each queue's numbers come
	// back in order. The window keeps every queue below veth's 256-frame
	// ring and the rx rings' frames.
	// A packet of several frames takes as many of the rings' slots.
	window := 128 * queues / ((frame.HeaderLen + size + a.qs[0].RxFrameLen() - 1) / a.qs[0].RxFrameLen())
	var (
		sent, echoed, back int
		descs              [64]xdp.Desc
		p                  frame.Parsed
		joined             = make([]byte, c.mtu+frame.EthLen+4)
	)
	next := make([]int, queues)   // the number each of A's queues expects next
	queued := make([]int, queues) // the number each of A's queues sends next
	for qi := range next {
		next[qi], queued[qi] = qi, qi
	}
	deadline := time.Now().Add(c.timeout)
	t0 := time.Now()
	for back < frames {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("demo stopped: sent %d, echoed %d, returned %d: %w", sent, echoed, back, cmp.Or(ctx.Err(), context.DeadlineExceeded))
		}
		// A: each queue sends its own numbers, up to the window.
		for qi, q := range a.qs {
			built := 0
			chain := descs[:0]
			for ; len(chain)+xdp.MaxPacketFrames <= len(descs) && queued[qi] < frames && sent+built-back < window; built++ {
				n := len(chain)
				var ok bool
				if chain, ok = q.AllocPacket(chain, frame.HeaderLen+size); !ok {
					break
				}
				buf := q.Data(chain[n])
				flow.Encode(buf, size, 0)
				binary.BigEndian.PutUint64(buf[frame.HeaderLen:], uint64(queued[qi]))
				queued[qi] += queues
			}
			n := q.Transmit(chain)
			q.ReleasePacket(chain[n:])
			unsent := built - packets(chain[:n])
			queued[qi] -= unsent * queues // not sent: sent again next turn
			sent += built - unsent
			if err := q.Kick(); err != nil {
				return err
			}
		}
		// B: swap the addresses and send each frame straight back.
		for _, q := range b.qs {
			n := q.Receive(descs[:])
			if n == 0 {
				continue
			}
			for i := 0; i < n; {
				// Parsed whole; the reversed headers go into the
				// packet's first frame.
				m, k := q.ReadPacket(joined, descs[i:n])
				if err := frame.Parse(joined[:m], &p); err != nil {
					return fmt.Errorf("B received a bad frame: %w", err)
				}
				rev := p.Flow.Reverse()
				rev.Encode(q.Data(descs[i]), len(p.Payload), 0)
				i += k
			}
			t := q.Transmit(descs[:n])
			q.ReleasePacket(descs[t:n])
			echoed += packets(descs[:t])
			if err := q.Kick(); err != nil {
				return err
			}
		}
		// A: check the echoes, queue by queue.
		for qi, q := range a.qs {
			n := q.Receive(descs[:])
			for i := 0; i < n; {
				m, k := q.ReadPacket(joined, descs[i:n])
				if err := frame.Parse(joined[:m], &p); err != nil {
					return fmt.Errorf("A received a bad frame: %w", err)
				}
				if seq := binary.BigEndian.Uint64(p.Payload); seq != uint64(next[qi]) {
					return fmt.Errorf("A's queue %d received frame %d, expected %d", qi, seq, next[qi])
				}
				q.ReleasePacket(descs[i : i+k])
				i += k
				next[qi] += queues
				back++
			}
		}
		for _, h := range hosts {
			for _, q := range h.qs {
				q.Complete()
				q.Refill()
			}
		}
	}
	el := time.Since(t0)

	fmt.Printf("\n%d frames of %d bytes A->B->A in %v: %.0f round trips/s, %.2f Gbit/s each way\n\n",
		frames, frame.HeaderLen+size, el.Round(time.Millisecond), float64(frames)/el.Seconds(),
		float64(frames*(frame.HeaderLen+size)*8)/el.Seconds()/1e9)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "host\tsteer seen\tredirected\tno socket\tpassed\tmalformed\t")
	for _, h := range hosts {
		ss, err := h.steer.Stats()
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", h.name, ss.Seen, ss.Redirected, ss.NoSocket, ss.Passed, ss.Malformed)
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "host\tqueue\trx\ttx\tcompleted\tkicks\ttx dropped\trx ring full\trx dropped\t")
	for _, h := range hosts {
		for qi, q := range h.qs {
			ks, err := q.KernelStats()
			if err != nil {
				return err
			}
			qs := q.Stats()
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", h.name, qi,
				qs.RxFrames, qs.TxFrames, qs.Completed, qs.Kicks, qs.TxDropped, ks.RxRingFull, ks.RxDropped)
		}
	}
	tw.Flush()
	for _, h := range hosts {
		for qi, q := range h.qs {
			if err := q.Pool().Check(); err != nil {
				return err
			}
			fmt.Printf("\n%s queue %d frames: %v", h.name, qi, q.Pool())
		}
	}
	fmt.Printf("\n\nframe accounting holds; tearing down (total %v)\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// packets counts the packets whose chains make up descs.
func packets(descs []xdp.Desc) int {
	n := 0
	for _, d := range descs {
		if d.Options&xdp.PktContd == 0 {
			n++
		}
	}
	return n
}
