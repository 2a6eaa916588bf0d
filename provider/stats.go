package provider

import (
	"reflect"
	"time"
)

// Stats is a snapshot of a provider's counters and accounting. It may be
// taken from any goroutine at any time, including from a completion's
// notify function; each field is read atomically, the whole is not one
// instant.
type Stats struct {
	// Poller counts what the poller role did (poller.go).
	Poller PollerStats

	// Buffer accounting: every buffer is in exactly one place, so
	// BuffersFree + SendQueued + InFlight + OutOfOrder + RecvQueued +
	// Sending == Buffers at all times.
	Buffers           int // total
	BuffersFree       int
	BuffersSendQueued int // send data not yet transmitted
	BuffersInFlight   int // send data transmitted, not yet acknowledged
	BuffersOutOfOrder int // received data beyond a hole
	BuffersRecvQueued int // received data not yet read
	// BuffersSending: acknowledged (or discarded) send data that the link
	// still transmits from in place; free once the kernel is done.
	BuffersSending int
	// BuffersLent is how many of Buffers live in memory the link lends
	// (the AF_XDP link's UMEM; see Lender), so that their data is sent where it was
	// written, without a copy; the rest are the provider's own.
	BuffersLent int

	Ops      int // the operation pool's size
	OpsInUse int // operations posted or running and not yet returned

	Sockets int // live descriptors
	// Endpoints is what the engine holds: sockets plus connections not
	// yet accepted, at most Config.MaxConnections. HalfOpen is the part
	// of those whose connector has not answered the accept yet: at most
	// each listener's backlog.
	Endpoints, HalfOpen int

	DatagramsIn, DatagramsOut       uint64
	DataOut                         uint64 // data segments, first transmissions and retransmissions
	Retransmits, FastRetransmits    uint64
	RTOExpiries                     uint64
	AcksOut, ProbesOut              uint64
	ResetsOut, ResetsIn, RejectsOut uint64
	// ResetsChallenged counts resets inside the window but not at its
	// left edge: answered with an ack, not taken (docs/PROTOCOL.md).
	ResetsChallenged uint64
	// Connect cookies: retries sent to connect requests a listener kept
	// no state for (its half-open connections were at their limit),
	// connect requests that came back with a valid cookie, and half-open
	// connections dropped because their connector never answered.
	RetriesOut, CookiesIn, HalfOpenExpired uint64
	DeadPeers                              uint64 // connections failed by the dead-peer bound
	Reneged                                uint64 // times out-of-order data was dropped for want of buffers
	// RecvDirect counts in-order bytes copied from the link straight into
	// the buffer of a receive that was waiting for them, with no stop in
	// the provider's buffers.
	RecvDirect uint64
	// RecvHeld counts in-order bytes that waited for their reader where
	// the link received them (see Holder), and were copied once, into
	// the reader's buffer, with no stop in the provider's buffers.
	RecvHeld uint64
	// HeldBuffers is how many of the link's buffers hold such data now.
	HeldBuffers int
	// SentInPlace counts data segments the link sent from the buffer
	// they were written to (see BuffersLent); the rest of DataOut were
	// copied into a frame.
	SentInPlace uint64
	// OutOfOrder counts data segments that arrived beyond a hole: after a
	// loss, or overtaken on the way.
	OutOfOrder uint64
	SendErrors uint64 // Link.Send errors other than ENOBUFS
	// TooBig counts connections failed with EMSGSIZE: their full-size
	// segments never reached the peer while smaller frames did.
	TooBig uint64
	Drops  DropStats
	// Unreachables counts ICMP port unreachables that named a live
	// connection (ids, ports, token) and failed it: its peer's stack is gone.
	Unreachables uint64
	// PeersGone counts peers another poller of the stack found gone by
	// such an ICMP, whose connections here were reset with them
	// (Config.PeerGone).
	PeersGone uint64
	// Peer stacks (see Config.PeerTimeout): heartbeats sent and
	// received; peers declared dead for silence (their connections are
	// counted in DeadPeers); peers found restarted (a new incarnation),
	// whose earlier connections were reset.
	HeartbeatsOut, HeartbeatsIn uint64
	PeersDead, PeerRestarts     uint64
	// Congestion control (docs/RELIABILITY.md). LossReductions counts
	// congestion windows halved for a loss (once per recovery episode),
	// ECNReductions windows shrunk for ECN marks (once per round trip),
	// SpuriousRTOs timeouts whose restart was undone because the acks
	// showed the data had arrived. ECNConnections counts connections on
	// which both ends took part in ECN; CEReceived data frames that
	// arrived marked CE; CEEchoed marks the peers reported back to us.
	// CwndLimited counts the times the congestion window stopped a
	// sender with data to send and credit to send it; PoolLimited the
	// times a writer waited for a buffer of the pool.
	LossReductions, ECNReductions, SpuriousRTOs uint64
	ECNConnections, CEReceived, CEEchoed        uint64
	CwndLimited, PoolLimited                    uint64
	// Bursts is a histogram of the new data segments a connection sent
	// back to back, by size: 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64 and
	// more. Pacing (Config.Pacing) keeps them at 16 or so; PaceWaits
	// counts the times it held a sender back.
	Bursts    [numBurstBuckets]uint64
	PaceWaits uint64
	// MTU is the largest datagram the link carries (Link.MTU). What a
	// link reports about itself it reports on its own: the AF_XDP
	// link's Stats and Counters.
	MTU int
}

// DropStats counts received datagrams dropped, by reason.
type DropStats struct {
	Malformed   uint64 // bad version, opcode or lengths
	Checksum    uint64 // CRC-32C mismatch
	BadToken    uint64 // wrong token, peer address, ports or ids: forged or stale
	UnknownConn uint64 // no such connection (answered with a reset)
	OutOfWindow uint64 // data beyond the granted window, or a reset outside it
	Duplicate   uint64 // data already received
	NoBuffer    uint64 // no buffer to hold data (the sender retransmits)
	BadAck      uint64 // acks data never sent
	BadCookie   uint64 // a connect's cookie did not check (forged or expired); it was taken as a connect without one
	Unreach     uint64 // an ICMP port unreachable that named no live connection with its ids, ports and token: forged, cut short, or too late
}

// Stats returns the provider's counters.
func (p *Provider) Stats() Stats {
	e := p.eng
	pl := e.pool
	st := &e.st
	s := Stats{
		Buffers:           pl.total(),
		BuffersFree:       int(pl.count(placeFree)),
		BuffersSendQueued: int(pl.count(placeSendQueued)),
		BuffersInFlight:   int(pl.count(placeInFlight)),
		BuffersOutOfOrder: int(pl.count(placeOutOfOrder)),
		BuffersRecvQueued: int(pl.count(placeRecvQueued)),
		BuffersSending:    int(pl.count(placeSending)),
		BuffersLent:       pl.nLent,
		Ops:               len(p.ops.ops),
		OpsInUse:          int(p.ops.inUse.Load()),
		Sockets:           int(p.nSockets.Load()),
		Endpoints:         int(st.endpoints.Load()),
		HalfOpen:          int(st.halfOpen.Load()),
		DatagramsIn:       st.datagramsIn.Load(),
		DatagramsOut:      st.datagramsOut.Load(),
		DataOut:           st.dataOut.Load(),
		Retransmits:       st.retransmits.Load(),
		FastRetransmits:   st.fastRetransmits.Load(),
		RTOExpiries:       st.rtoExpiries.Load(),
		AcksOut:           st.acksOut.Load(),
		ProbesOut:         st.probesOut.Load(),
		ResetsOut:         st.resetsOut.Load(),
		ResetsIn:          st.resetsIn.Load(),
		ResetsChallenged:  st.resetsChallenged.Load(),
		RejectsOut:        st.rejectsOut.Load(),
		RetriesOut:        st.retriesOut.Load(),
		CookiesIn:         st.cookiesIn.Load(),
		HalfOpenExpired:   st.halfOpenExpired.Load(),
		DeadPeers:         st.deadPeers.Load(),
		Reneged:           st.reneged.Load(),
		RecvDirect:        st.recvDirect.Load(),
		RecvHeld:          st.recvHeld.Load(),
		HeldBuffers:       int(st.heldNow.Load()),
		SentInPlace:       st.inPlace.Load(),
		OutOfOrder:        st.oooIn.Load(),
		SendErrors:        st.sendErrors.Load(),
		TooBig:            st.tooBig.Load(),
		Unreachables:      st.unreachIn.Load(),
		HeartbeatsOut:     st.heartbeatsOut.Load(),
		HeartbeatsIn:      st.heartbeatsIn.Load(),
		PeersDead:         st.peersDead.Load(),
		PeerRestarts:      st.peerRestarts.Load(),
		PeersGone:         st.peersGone.Load(),
		LossReductions:    st.lossReductions.Load(),
		ECNReductions:     st.ecnReductions.Load(),
		SpuriousRTOs:      st.spuriousRTOs.Load(),
		ECNConnections:    st.ecnConns.Load(),
		CEReceived:        st.ceIn.Load(),
		CEEchoed:          st.ceEchoed.Load(),
		CwndLimited:       st.cwndLimited.Load(),
		PoolLimited:       st.poolLimited.Load(),
		PaceWaits:         st.paceWaits.Load(),
		Drops: DropStats{
			Malformed:   st.dropMalformed.Load(),
			Checksum:    st.dropChecksum.Load(),
			BadToken:    st.dropBadToken.Load(),
			UnknownConn: st.dropUnknownConn.Load(),
			OutOfWindow: st.dropOutOfWindow.Load(),
			Duplicate:   st.dropDuplicate.Load(),
			NoBuffer:    st.dropNoBuffer.Load(),
			BadAck:      st.dropBadAck.Load(),
			BadCookie:   st.dropBadCookie.Load(),
			Unreach:     st.dropUnreach.Load(),
		},
		MTU:    e.mtu,
		Poller: p.role.stats(),
	}
	for i := range s.Bursts {
		s.Bursts[i] = st.bursts[i].Load()
	}
	return s
}

// BuffersHeld returns how many buffers hold data: the pool's less the free
// ones, and the link's that keep received data (HeldBuffers).
func (s Stats) BuffersHeld() int { return s.Buffers - s.BuffersFree + s.HeldBuffers }

// ConnInfo is one connection's congestion state, as Provider.ConnInfo
// reports it: a snapshot taken on the poller.
type ConnInfo struct {
	// Cwnd is the congestion window and Ssthresh the slow-start
	// threshold, in bytes (Ssthresh is math.MaxInt32 until the first
	// reduction); InFlight is what the sender counts in the network
	// (RFC 6675's pipe), SendWindow the peer's credit beyond what it
	// acknowledged. The sender sends while InFlight is below both.
	Cwnd, Ssthresh, InFlight, SendWindow int
	SlowStart, Recovering                bool
	SRTT, RTO                            time.Duration
	// ECN says both ends take part in ECN; Alpha is DCTCP's estimate of
	// the fraction of our bytes marked; CEReceived counts the data frames
	// that reached us marked CE, CEEchoed the marks the peer reported.
	ECN                  bool
	Alpha                float64
	CEReceived, CEEchoed uint64
	// Limit is what stopped the sender the last time it sent: LimitNone
	// (it sent all it had), LimitWindow, LimitCwnd, LimitPool or LimitPace.
	Limit Limit
}

// connInfo reads ep's congestion state; on the poller.
func connInfo(ep *endpoint) ConnInfo {
	c := &ep.snd.cc
	info := ConnInfo{
		Cwnd: c.cwnd, Ssthresh: c.ssthresh, InFlight: ep.snd.pipe(),
		SlowStart: c.inSlowStart(), Recovering: c.recovering,
		SRTT: time.Duration(ep.snd.rtt.srtt), RTO: time.Duration(ep.snd.rtt.rto),
		ECN: ep.ecnOK, CEReceived: ep.ceTotal, CEEchoed: c.ceEchoed,
		Limit: limitName[ep.snd.limit],
	}
	if ep.snd.sndRight > ep.snd.sndUna {
		info.SendWindow = int(ep.snd.sndRight - ep.snd.sndUna)
	}
	if ep.ecnOK {
		info.Alpha = float64(c.alpha) / alphaOne
	}
	return info
}

// limitName names the sender's limit codes (sender.limit).
var limitName = [...]Limit{limitNone: LimitNone, limitCredit: LimitWindow, limitCwnd: LimitCwnd, limitPool: LimitPool, limitPace: LimitPace}

// Add returns the sum of s and o, field by field, as for the providers of
// one stack's pollers; MTU, the same for both, stays s's.
func (s Stats) Add(o Stats) Stats {
	mtu := s.MTU
	addFields(reflect.ValueOf(&s).Elem(), reflect.ValueOf(o))
	s.MTU = mtu
	return s
}

// addFields adds o's integer fields, also those of nested structs, to v's.
func addFields(v, o reflect.Value) {
	for i := range v.NumField() {
		f, g := v.Field(i), o.Field(i)
		switch f.Kind() {
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + g.Int())
		case reflect.Uint64:
			f.SetUint(f.Uint() + g.Uint())
		case reflect.Struct:
			addFields(f, g)
		}
	}
}
