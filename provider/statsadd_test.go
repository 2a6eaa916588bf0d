package provider

import "testing"

// TestStatsAdd: the counters of two providers add up field by field,
// nested ones too; the MTU, the same for both, is not doubled.
func TestStatsAdd(t *testing.T) {
	a := Stats{MTU: 1472, DatagramsIn: 3, Buffers: 10, Poller: PollerStats{Polls: 5}, Drops: DropStats{Checksum: 1}}
	b := Stats{MTU: 1472, DatagramsIn: 4, Buffers: 20, Poller: PollerStats{Polls: 6}, Drops: DropStats{Checksum: 2}}
	s := a.Add(b)
	if s.MTU != 1472 || s.DatagramsIn != 7 || s.Buffers != 30 || s.Poller.Polls != 11 || s.Drops.Checksum != 3 {
		t.Errorf("sum: %+v", s)
	}
	if a.DatagramsIn != 3 {
		t.Errorf("Add changed its receiver: %+v", a)
	}
}
