package xdplink

import (
	"net/netip"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/xdp"
)

// ReceivedCE reports whether the frame Receive hands to its fn arrived
// marked CE (see provider.ECNLink).
func (l *Link) ReceivedCE() bool { return l.parsed.Flow.ECN == frame.CE }

// Receive hands up to max received sdx datagrams to fn and returns how many
// it handed over. Frames not for this host's sdx port are counted and
// dropped.
// With several queues it drains them in turn, starting one further each
// call, so that no queue waits behind a busy one.
func (l *Link) Receive(max int, fn func(peer netip.Addr, payload []byte, more [][]byte)) int {
	if l.neigh.Resolving() > 0 {
		l.resolvePending()
	}
	got := 0
	if l.in.pending() {
		got = l.drainInbox(max, fn)
	}
	if len(l.qs) == 1 {
		got += l.receive(l.qs[0], 0, max-got, fn)
		if l.woke != 0 {
			l.wakeOwners()
		}
		return got
	}
	for i := range l.qs {
		if got >= max {
			break
		}
		qi := (l.rr + i) % len(l.qs)
		got += l.receive(l.qs[qi], qi, max-got, fn)
	}
	l.rr = (l.rr + 1) % len(l.qs)
	if l.woke != 0 {
		l.wakeOwners()
	}
	return got
}

// receive is Receive on queue qi.
func (l *Link) receive(lq *linkQueue, qi, max int, fn func(peer netip.Addr, payload []byte, more [][]byte)) int {
	q := lq.q
	got := 0
	for got < max {
		want := min(max-got, len(l.descs))
		n := q.ReceivePackets(l.descs[:], want)
		if n == 0 {
			break
		}
		lq.rx.add(uint64(n))
		tap := l.tap.Load()
		packets := 0
		for i := 0; i < n; packets++ {
			d := l.descs[i]
			data, k := q.Data(d), 1
			var more [][]byte
			var err error
			if d.Options&xdp.PktContd == 0 {
				err = frame.Parse(data, &l.parsed)
			} else {
				// A multi-buffer frame: its headers in the first
				// buffer, its payload handed on in pieces.
				k, more, err = l.pieces(q, l.descs[i:n])
			}
			if tap != nil {
				l.capture(tap, q, l.descs[i:i+k])
			}
			switch {
			case err == frame.ErrNotUDP:
				if l.unreachable(data) {
					got++
				}
			case err != nil:
				l.ctr.malformed.bump()
			case l.parsed.Flow.Dst.IP != l.local.IP || l.parsed.Flow.Dst.Port != l.cfg.Port:
				l.ctr.notOurs.bump()
			case l.unanswerable(l.parsed.Flow.Src.IP):
				l.ctr.spoofed.bump()
			case l.in != nil && l.handOverReceived(more):
				got++
			default:
				l.ctr.received.bump()
				if len(l.qs) > 1 {
					// Answers to this flow go out where it came in.
					k, h := flowOf(l.parsed.Flow.Src.IP, l.parsed.Payload, true)
					l.flows.put(k, h, uint8(qi))
				}
				l.cur = holding{lq: lq, descs: l.descs[i : i+k], more: more}
				fn(l.parsed.Flow.Src.IP, l.parsed.Payload, more)
				got++
			}
			q.ReleasePacket(l.descs[i+l.cur.kept : i+k])
			l.cur = holding{}
			i += k
		}
		if packets < want {
			// The ring held no more when we looked: looking again at
			// once would only pull its index from the kernel's CPU.
			break
		}
	}
	q.Refill()
	return got
}

// pieces parses the multi-buffer frame whose chain begins descs into
// l.parsed, whose Payload is then the payload's part in the first buffer,
// and returns the chain's length and the payload's other pieces, valid
// until the frames are released.
func (l *Link) pieces(q *xdp.Queue, descs []xdp.Desc) (k int, more [][]byte, err error) {
	k, frameLen := xdp.Chain(descs)
	plen, err := frame.ParseHead(q.Data(descs[0]), frameLen, &l.parsed)
	if err != nil {
		return k, nil, err
	}
	if k-1 > len(l.more) {
		return k, nil, frame.ErrShort // more buffers than a packet takes
	}
	more = l.more[:0]
	for left, i := plen-len(l.parsed.Payload), 1; left > 0 && i < k; i++ {
		p := q.Data(descs[i])
		p = p[:min(len(p), left)]
		more = append(more, p)
		left -= len(p)
	}
	return k, more, nil
}
