package sys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PerfEvent is one event perf_event_open(2) can count: a software event,
// or a tracepoint named "subsystem/event".
type PerfEvent struct {
	Name       string
	Software   uint64 // a PERF_COUNT_SW_* event, when Tracepoint is empty
	Tracepoint string
}

// tracefs are the places the tracepoints' ids may be read from.
var tracefs = []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"}

// attr returns the event's perf_event_attr: counting, inherited by the
// threads and processes a counted thread starts.
func (e PerfEvent) attr() (*unix.PerfEventAttr, error) {
	a := &unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: e.Software, Size: unix.PERF_ATTR_SIZE_VER0, Bits: unix.PerfBitInherit}
	if e.Tracepoint == "" {
		return a, nil
	}
	var errs []error
	for _, dir := range tracefs {
		b, err := os.ReadFile(dir + "/" + e.Tracepoint + "/id")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("tracepoint %s: %w", e.Tracepoint, err)
		}
		a.Type, a.Config = unix.PERF_TYPE_TRACEPOINT, id
		return a, nil
	}
	return nil, fmt.Errorf("tracepoint %s: no tracefs: %w", e.Tracepoint, errors.Join(errs...))
}

// PerfCounters count events over every thread of some processes: one
// counter per thread and event, opened on the threads there are when
// they open and inherited by the threads those start later. A thread
// started by one whose counter is not yet open while they open is not
// counted. One goroutine uses a PerfCounters.
type PerfCounters struct {
	events  []PerfEvent
	fds     [][]int           // per event, one per thread
	missing map[string]string // event name → why it is not counted
}

// OpenPerf opens the events' counters on every thread of pids. An event
// the kernel refuses is not an error: Missing says why it is not counted.
func OpenPerf(pids []int, events []PerfEvent) *PerfCounters {
	p := &PerfCounters{events: events, fds: make([][]int, len(events)), missing: map[string]string{}}
	var tids []int
	for _, pid := range pids {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			for _, e := range events {
				p.missing[e.Name] = fmt.Sprintf("threads of process %d: %v", pid, err)
			}
			return p
		}
		for _, ent := range ents {
			if tid, err := strconv.Atoi(ent.Name()); err == nil {
				tids = append(tids, tid)
			}
		}
	}
	for i, e := range events {
		a, err := e.attr()
		if err != nil {
			p.missing[e.Name] = err.Error()
			continue
		}
		for _, tid := range tids {
			fd, err := unix.PerfEventOpen(a, tid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
			if errors.Is(err, unix.ESRCH) {
				continue // the thread ended
			}
			if err != nil {
				p.missing[e.Name] = fmt.Sprintf("perf_event_open: %v", err)
				p.closeEvent(i)
				break
			}
			p.fds[i] = append(p.fds[i], fd)
		}
	}
	return p
}

// Read returns each counted event's total so far over every thread.
func (p *PerfCounters) Read() (map[string]uint64, error) {
	out := make(map[string]uint64, len(p.events))
	var b [8]byte
	for i, e := range p.events {
		if _, miss := p.missing[e.Name]; miss {
			continue
		}
		var sum uint64
		for _, fd := range p.fds[i] {
			n, err := unix.Read(fd, b[:])
			if err != nil || n != len(b) {
				return nil, fmt.Errorf("read counter %s: %d bytes, %v", e.Name, n, err)
			}
			sum += binary.NativeEndian.Uint64(b[:])
		}
		out[e.Name] = sum
	}
	return out, nil
}

// Missing returns the events not counted, each with the reason.
func (p *PerfCounters) Missing() map[string]string { return p.missing }

func (p *PerfCounters) closeEvent(i int) {
	for _, fd := range p.fds[i] {
		unix.Close(fd)
	}
	p.fds[i] = nil
}

// Close closes every counter.
func (p *PerfCounters) Close() {
	for i := range p.fds {
		p.closeEvent(i)
	}
}
