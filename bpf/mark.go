package bpf

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Marker is the loaded sdx_mark program with its maps: an ECN-marking AQM
// for a test bottleneck whose kernel has no marking qdisc. Attach it with
// AttachEgress to the bottleneck port, in front of the port's tbf, and
// Configure it with the tbf's rate, burst and buffer (see the package
// documentation, "ECN marking"). One Marker keeps one virtual queue: give
// each port a Marker of its own. Until the first Configure every frame
// passes unmarked.
//
// Every method may be called from any goroutine; Close waits for calls in
// progress and is idempotent. Closing a Marker does not detach the
// program: an attachment holds its own reference until its link is
// closed, and the program keeps its settings and queue.
type Marker struct {
	// mu guards objs against Close: Program, AttachEgress and Stats hold
	// it for reading; Configure and Close hold it for writing, so that
	// one Configure's settings and reset go in together.
	mu     sync.RWMutex
	closed bool
	objs   markObjects
}

// MarkerStats are the program's counters summed over all CPUs. Every run
// adds one to Seen, and one to Over when the frame found more than the
// threshold queued (itself included); so whenever the program is not
// running Marked <= Over <= Seen and Overflow <= Over.
type MarkerStats struct {
	Seen     uint64 // frames the program ran on
	Over     uint64 // frames that found more than the threshold queued
	Marked   uint64 // of those, ECT(0) or ECT(1) IPv4 frames it set to CE
	Overflow uint64 // frames that did not fit under the limit: the tbf's drops, roughly
}

// LoadMarker loads sdx_mark into the kernel. The program is not attached
// and, until Configure, passes every frame.
func LoadMarker() (*Marker, error) {
	spec, err := loadMark()
	if err != nil {
		return nil, fmt.Errorf("load marker: %w", err)
	}
	m := &Marker{}
	if err := spec.LoadAndAssign(&m.objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			err = &KernelFeatureError{Feature: "the marking program (TC, spin locks in maps)", Minimum: MinKernel, Err: err}
		}
		return nil, fmt.Errorf("load marker: %w", err)
	}
	return m, nil
}

// Program returns the TC program. It stays owned by m: do not close it.
// After Close it is a closed program.
func (m *Marker) Program() *ebpf.Program {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.objs.SdxMark
}

// AttachEgress attaches the program at the tcx egress hook of the
// interface ifindex in the calling thread's network namespace (use
// sys.InNetns for another), after any program already there. It sees
// every frame offered to the interface before its qdisc does. Closing the
// link detaches it.
func (m *Marker) AttachEgress(ifindex int) (link.Link, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, fmt.Errorf("attach marker: %w", ErrClosed)
	}
	l, err := attachTCXEgress(m.objs.SdxMark, ifindex)
	if err != nil {
		return nil, fmt.Errorf("attach marker: %w", err)
	}
	return l, nil
}

// Configure sets the virtual queue and empties it: it drains at rate bits
// a second, holds at most limit bytes, and an ECN-capable frame that finds
// more than threshold bytes in it, itself included, is marked CE. burst is
// the token bucket of the tbf in front of which the marker runs: a tbf
// lets burst bytes through at once after an idle spell and then holds the
// excess, so its queue is the virtual queue less burst; the program
// compares with threshold+burst and limit+burst (see the package
// documentation). It may be called while the program is attached. The
// counters keep counting.
func (m *Marker) Configure(rate int64, burst, threshold, limit int) error {
	if rate < 8 {
		return fmt.Errorf("configure marker: rate %d bit/s: want 8 or more", rate)
	}
	if burst < 0 {
		return fmt.Errorf("configure marker: burst %d bytes: want 0 or more", burst)
	}
	if limit <= 0 || int64(limit)+int64(burst) > math.MaxUint32 {
		return fmt.Errorf("configure marker: limit %d bytes and burst %d: want a limit above 0, the two below %d", limit, burst, uint32(math.MaxUint32))
	}
	if threshold < 0 || threshold >= limit {
		return fmt.Errorf("configure marker: threshold %d bytes: want 0 to the limit, %d", threshold, limit)
	}
	settings := markConfig{Rate: uint64(rate) / 8, Threshold: uint32(threshold + burst), Limit: uint32(limit + burst)}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("configure marker: %w", ErrClosed)
	}
	if err := m.objs.Settings.Update(uint32(0), &settings, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("configure marker: %w", err)
	}
	// BPF_F_LOCK: the program updates the queue under its lock.
	if err := m.objs.Queue.Update(uint32(0), &markVqueue{}, ebpf.UpdateLock); err != nil {
		return fmt.Errorf("configure marker: reset the queue: %w", err)
	}
	return nil
}

// Stats returns the counters summed over all CPUs.
func (m *Marker) Stats() (MarkerStats, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return MarkerStats{}, fmt.Errorf("marker stats: %w", ErrClosed)
	}
	var per []markCounters
	if err := m.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return MarkerStats{}, fmt.Errorf("marker stats: %w", err)
	}
	var st MarkerStats
	for _, c := range per {
		st.Seen += c.Seen
		st.Over += c.Over
		st.Marked += c.Marked
		st.Overflow += c.Overflow
	}
	return st, nil
}

// Marked returns the frames marked so far, Stats().Marked.
func (m *Marker) Marked() (uint64, error) {
	st, err := m.Stats()
	return st.Marked, err
}

// Close releases the program and maps. Attachments keep the program, its
// settings and its queue alive until their links are closed. Close is
// idempotent.
func (m *Marker) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if err := m.objs.Close(); err != nil {
		return fmt.Errorf("close marker: %w", err)
	}
	return nil
}
