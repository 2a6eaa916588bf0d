package provider

import (
	"math"
	"testing"
	"time"
)

var testBounds = rtoBounds{
	initial: int64(20 * time.Millisecond),
	min:     int64(time.Microsecond),
	max:     int64(time.Second),
}

func TestRTTFirstSample(t *testing.T) {
	var r rttStats
	if got := r.timeout(testBounds); got != testBounds.initial {
		t.Fatalf("timeout before any sample %d, want the initial %d", got, testBounds.initial)
	}
	r.start(testBounds)
	if r.rto != testBounds.initial {
		t.Fatalf("started rto %d", r.rto)
	}
	// RFC 6298 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR.
	r.sample(1000)
	if r.srtt != 1000 || r.rttvar != 500 || r.timeout(testBounds) != 3000 {
		t.Fatalf("first sample: srtt %d rttvar %d timeout %d", r.srtt, r.rttvar, r.timeout(testBounds))
	}
	// A sample is taken; the timeout in force changes only on settle.
	if r.rto != testBounds.initial {
		t.Fatalf("sample changed the rto in force to %d", r.rto)
	}
	r.settle(testBounds)
	if r.rto != 3000 {
		t.Fatalf("settled rto %d, want 3000", r.rto)
	}
}

func TestRTTZeroSample(t *testing.T) {
	// A round trip shorter than the clock's tick still counts as a
	// sample: SRTT is at least 1, so "no sample yet" stays distinguishable.
	var r rttStats
	r.sample(0)
	if r.srtt != 1 || r.rttvar != 0 {
		t.Fatalf("zero sample: srtt %d rttvar %d", r.srtt, r.rttvar)
	}
	r.sample(0)
	if r.srtt != 1 {
		t.Fatalf("srtt fell to %d", r.srtt)
	}
}

func TestRTTNegativeSampleIgnored(t *testing.T) {
	var r rttStats
	r.sample(-5)
	if r != (rttStats{}) {
		t.Fatalf("negative sample taken: %+v", r)
	}
	r.sample(1000)
	before := r
	r.sample(-1)
	if r != before {
		t.Fatalf("negative sample changed %+v to %+v", before, r)
	}
}

func TestRTTSmoothing(t *testing.T) {
	var r rttStats
	r.sample(1000)
	r.sample(2000)
	// RFC 6298 2.3: RTTVAR = 3/4·500 + 1/4·|1000-2000| = 625;
	// SRTT = 7/8·1000 + 1/8·2000 = 1125.
	if r.srtt != 1125 || r.rttvar != 625 || r.timeout(testBounds) != 1125+4*625 {
		t.Fatalf("second sample: srtt %d rttvar %d timeout %d", r.srtt, r.rttvar, r.timeout(testBounds))
	}
	// A steady round trip converges: SRTT to it, RTTVAR toward zero.
	for range 200 {
		r.sample(4000)
	}
	if r.srtt < 3990 || r.srtt > 4000 || r.rttvar > 10 {
		t.Fatalf("steady 4000: srtt %d rttvar %d", r.srtt, r.rttvar)
	}
}

func TestRTTClamp(t *testing.T) {
	var r rttStats
	r.sample(100)
	b := testBounds
	b.min = int64(time.Millisecond)
	if got := r.timeout(b); got != b.min {
		t.Fatalf("timeout %d below the floor %d", got, b.min)
	}
	r.srtt = int64(time.Hour)
	if got := r.timeout(b); got != b.max {
		t.Fatalf("timeout %d above the ceiling %d", got, b.max)
	}
}

func TestRTTBackoff(t *testing.T) {
	var r rttStats
	r.sample(1000)
	r.settle(testBounds)
	want := int64(3000)
	for range 40 {
		r.backoff(testBounds)
		want = min(2*want, testBounds.max)
		if r.rto != want {
			t.Fatalf("backed-off rto %d, want %d", r.rto, want)
		}
	}
	// An ack undoes the backoff.
	r.settle(testBounds)
	if r.rto != 3000 {
		t.Fatalf("settled rto %d after backoff, want 3000", r.rto)
	}
	// Doubling saturates instead of wrapping, whatever the ceiling.
	r.rto = math.MaxInt64/2 + 1
	r.backoff(rtoBounds{max: math.MaxInt64})
	if r.rto != math.MaxInt64 {
		t.Fatalf("backoff wrapped to %d", r.rto)
	}
}
