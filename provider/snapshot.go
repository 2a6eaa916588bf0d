package provider

import (
	"net/netip"
	"time"
)

// connCounters are one connection's own counters, beside the engine's
// totals: each is bumped where the matching engineStats counter is, so
// over the connections alive since the provider started they add up to
// the totals. Plain fields, owned by the poller; read only through a
// snapshot, which the poller takes (see ConnStats).
type connCounters struct {
	retransmits     uint64 // segments retransmitted (fast or after a timeout)
	fastRetransmits uint64 // segments marked lost by duplicate acks or SACK
	rtoExpiries     uint64 // retransmission timer expiries
	segsOut         uint64 // data segments transmitted, retransmissions included
	bytesOut        uint64 // their payload bytes
	segsIn          uint64 // data segments received, duplicates included
	lastSend        int64  // when a data segment or disconnect last went out; 0: never
	lastAck         int64  // when an ack last moved the send edge; 0: never
}

// Limit says what holds a connection's sender back at the instant of a
// snapshot.
type Limit string

const (
	LimitNone       Limit = "none"        // nothing: all written data is out (the application is the limit)
	LimitWindow     Limit = "window"      // the peer's receive window
	LimitPool       Limit = "pool"        // the shared buffer pool: a write found no buffer
	LimitSendBuffer Limit = "send-buffer" // its own send buffer (Config.SendBuffer) is full
	LimitCwnd       Limit = "cwnd"        // the congestion window (cc.go)
	LimitPace       Limit = "pace"        // pacing (Config.Pacing): the rest of the window goes later in the round trip
)

// ConnStats is one endpoint's figures at one instant, taken by the
// poller between two steps of its loop (Provider.ConnStats): the whole is
// consistent. Durations are in nanoseconds in JSON. Ages and timers are
// relative to the instant of the snapshot; -1 for "never" or "not
// armed".
type ConnStats struct {
	ID    uint32         `json:"id"`
	State string         `json:"state"`
	Local netip.AddrPort `json:"local"`
	Peer  netip.AddrPort `json:"peer"` // unset for a listener
	MSS   int            `json:"mss"`  // payload bytes per segment

	RTT    time.Duration `json:"rtt_ns"` // smoothed; 0 before the first sample
	RTTVar time.Duration `json:"rttvar_ns"`
	MinRTT time.Duration `json:"minrtt_ns"`
	RTO    time.Duration `json:"rto_ns"`

	Retransmits     uint64 `json:"retransmits"`
	FastRetransmits uint64 `json:"fast_retransmits"`
	RTOExpiries     uint64 `json:"rto_expiries"`

	BytesSent     uint64 `json:"bytes_sent"` // payload transmitted, retransmissions included
	BytesAcked    uint64 `json:"bytes_acked"`
	BytesReceived uint64 `json:"bytes_received"` // in order
	SegsOut       uint64 `json:"segs_out"`
	SegsIn        uint64 `json:"segs_in"`

	RecvQ    int `json:"recv_q"`    // received, not yet read
	RecvHeld int `json:"recv_held"` // link buffers in which part of RecvQ waits (see Holder)
	SendQ    int `json:"send_q"`    // written, not yet acknowledged
	InFlight int `json:"in_flight"` // sent, not yet acknowledged

	PeerWindow int   `json:"peer_window"` // what the peer lets us send beyond the acknowledged
	OwnWindow  int   `json:"own_window"`  // what we granted the peer beyond what we received
	Limit      Limit `json:"limit"`
	// Cwnd and Ssthresh are the congestion window and slow-start
	// threshold in bytes (Ssthresh is math.MaxInt32 before the first
	// reduction); 0 for an endpoint that is not an established
	// connection. Provider.ConnInfo has the rest of the congestion state.
	Cwnd     int `json:"cwnd"`
	Ssthresh int `json:"ssthresh"`

	LastSend time.Duration `json:"last_send_ns"` // age of the last data segment sent
	LastRecv time.Duration `json:"last_recv_ns"` // age of the last frame heard from the peer
	LastAck  time.Duration `json:"last_ack_ns"`  // age of the last ack that moved the send edge

	RTOTimer       time.Duration `json:"rto_timer_ns"`       // retransmission timer
	AckTimer       time.Duration `json:"ack_timer_ns"`       // delayed ack
	KeepaliveTimer time.Duration `json:"keepalive_timer_ns"` // the next liveness probe
}

// ConnStats returns the figures of every endpoint that has a port
// (listeners and connections, accepted or not), in id order. The poller
// takes them, at a request through the submission ring like any verb, so
// that the data path pays nothing while nobody asks.
func (p *Provider) ConnStats() ([]ConnStats, error) {
	if !p.enter() {
		return nil, ErrNetDown
	}
	var out []ConnStats
	o := p.getOp(opSnapshot, 0)
	o.snap = &out
	p.call(o)
	return out, p.result(o)
}

// snapshot fills *out; poller only.
func (p *Provider) snapshot(out *[]ConnStats) {
	e := p.eng
	now := e.now
	local := p.link.LocalAddr()
	for _, ep := range e.eps {
		if ep == nil || ep.released || !ep.state.hasPort() {
			continue
		}
		*out = append(*out, e.connStats(ep, local, now))
	}
}

// age turns an instant (0: never) into its age at now.
func age(t, now int64) time.Duration {
	if t == 0 {
		return -1
	}
	return time.Duration(now - t)
}

// until turns a deadline (0: none) into the time left at now.
func until(t, now int64) time.Duration {
	if t == 0 {
		return -1
	}
	return time.Duration(max(t-now, 0))
}

func (e *engine) connStats(ep *endpoint, local netip.Addr, now int64) ConnStats {
	c := ConnStats{
		ID:              ep.id,
		State:           ep.state.String(),
		Local:           netip.AddrPortFrom(local, ep.lport),
		MSS:             ep.mss,
		RTT:             time.Duration(ep.snd.rtt.srtt),
		RTTVar:          time.Duration(ep.snd.rtt.rttvar),
		MinRTT:          time.Duration(ep.snd.rtt.minRTT),
		RTO:             time.Duration(ep.snd.rtt.rto),
		Retransmits:     ep.stat.retransmits,
		FastRetransmits: ep.stat.fastRetransmits,
		RTOExpiries:     ep.stat.rtoExpiries,
		BytesSent:       ep.stat.bytesOut,
		SegsOut:         ep.stat.segsOut,
		SegsIn:          ep.stat.segsIn,
		Limit:           LimitNone,
		LastSend:        age(ep.stat.lastSend, now),
		LastRecv:        age(ep.lastHeard, now),
		LastAck:         age(ep.stat.lastAck, now),
		RTOTimer:        until(ep.snd.rtoAt, now),
		AckTimer:        until(ep.rcv.ackAt, now),
		KeepaliveTimer:  -1,
	}
	if !ep.state.hasPeer() {
		return c
	}
	c.Peer = netip.AddrPortFrom(ep.raddr, ep.rport)
	// Offsets count from 0, and a disconnect takes one.
	c.BytesAcked = ep.snd.sndUna
	if ep.snd.finAcked {
		c.BytesAcked--
	}
	c.BytesReceived = ep.rcv.rcvNxt
	if ep.rcv.eof {
		c.BytesReceived--
	}
	c.RecvQ = ep.rcv.rqBytes
	c.RecvHeld = ep.rcv.held
	c.SendQ = int(ep.snd.sndEnd - ep.snd.sndUna)
	if ep.snd.finQd && !ep.snd.finAcked {
		c.SendQ--
	}
	c.InFlight = int(ep.snd.sndNxt - ep.snd.sndUna)
	if ep.snd.sndRight > ep.snd.sndUna {
		c.PeerWindow = int(ep.snd.sndRight - ep.snd.sndUna)
	}
	if ep.rcv.lastEdge > ep.rcv.rcvNxt {
		c.OwnWindow = int(ep.rcv.lastEdge - ep.rcv.rcvNxt)
	}
	switch {
	case ep.snd.starved:
		c.Limit = LimitPool
	case ep.snd.winWait || ep.snd.slen > ep.snd.sent && ep.snd.at(ep.snd.sent).end() > ep.snd.sndRight:
		c.Limit = LimitWindow
	case ep.snd.slen > ep.snd.sent && ep.snd.limit == limitCwnd:
		c.Limit = LimitCwnd
	case ep.snd.slen > ep.snd.sent && ep.snd.limit == limitPace:
		c.Limit = LimitPace
	case c.SendQ >= e.cfg.SendBuffer:
		c.Limit = LimitSendBuffer
	}
	if ep.state == stateEstablished {
		c.Cwnd, c.Ssthresh = ep.snd.cc.cwnd, ep.snd.cc.ssthresh
		c.KeepaliveTimer = until(e.keepaliveAt(ep), now)
	}
	return c
}
