package provider

// rtoBounds are the retransmission timeout's limits, in nanoseconds: the
// timeout before the first round-trip sample, and the floor and ceiling
// of every timeout after it.
type rtoBounds struct {
	initial, min, max int64
}

// rttStats is a connection's round-trip estimate and its retransmission
// timeout (RFC 6298), all in nanoseconds. It is a plain value, owned by
// the connection's sender; it reads no clock.
//
// The timeout rto is the estimate's, SRTT + 4·RTTVAR within the bounds,
// after every new acknowledgement (settle), and doubles on every expiry
// up to the ceiling (backoff).
type rttStats struct {
	srtt   int64 // smoothed round trip; 0: no sample yet
	rttvar int64 // round-trip variation
	rto    int64 // the timeout now in force
	minRTT int64 // the smallest measurement; 0: none yet
}

// start arms the timeout of a connection that has no sample yet.
func (r *rttStats) start(b rtoBounds) {
	r.rto = b.initial
}

// sample folds one round-trip measurement into SRTT and RTTVAR
// (RFC 6298 section 2). A negative measurement is no measurement.
func (r *rttStats) sample(d int64) {
	if d < 0 {
		return
	}
	if r.minRTT == 0 || d < r.minRTT {
		r.minRTT = max(d, 1)
	}
	if r.srtt == 0 {
		r.srtt = max(d, 1)
		r.rttvar = d / 2
		return
	}
	dev := r.srtt - d
	if dev < 0 {
		dev = -dev
	}
	r.rttvar = (3*r.rttvar + dev) / 4
	r.srtt = max((7*r.srtt+d)/8, 1)
}

// timeout is SRTT + 4·RTTVAR within [b.min, b.max], or b.initial before
// the first sample.
func (r *rttStats) timeout(b rtoBounds) int64 {
	if r.srtt == 0 {
		return b.initial
	}
	return min(max(r.srtt+4*r.rttvar, b.min), b.max)
}

// settle sets the timeout back to the estimate's, undoing any backoff:
// an acknowledgement (or the handshake's answer) came.
func (r *rttStats) settle(b rtoBounds) {
	r.rto = r.timeout(b)
}

// backoff doubles the timeout after an expiry, up to b.max
// (RFC 6298 section 5.5).
func (r *rttStats) backoff(b rtoBounds) {
	r.rto = min(later(r.rto, r.rto), b.max)
}
