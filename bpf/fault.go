package bpf

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cilium/ebpf"
)

// Fault is the loaded sdx_fault program with its maps: a loss injector for
// tests. Attach it with Attach to a hop between two sdx hosts, not to an
// interface sdx_steer serves (see the package documentation). Until the
// first Configure every frame passes.
//
// Every method may be called from any goroutine; Close waits for calls in
// progress and is idempotent. Closing a Fault does not detach the program:
// an attachment holds its own reference until its link is closed, and the
// program keeps the settings it had.
type Fault struct {
	// mu guards objs against Close: Program and Stats hold it for reading
	// while they use the program or a map; Configure and Close hold it for
	// writing, so that one Configure's seeds and settings go in together.
	mu     sync.RWMutex
	closed bool
	objs   faultObjects // SdxFault is nil when the kernel refused it

	fragsErr error // why SdxFault is not loaded; set before f is shared
}

// FaultConfig says which frames sdx_fault drops. A frame is eligible when
// it is an sdx frame (as sdx_steer parses it) to Port and, if Opcodes is
// not empty, its opcode is one of Opcodes. Each eligible frame is dropped
// with probability DropRate, and the next DropNext eligible frames are
// dropped whatever the draw. Every other frame passes.
type FaultConfig struct {
	// Port is the UDP destination port of sdx frames, host byte order.
	Port uint16
	// DropRate is the probability, from 0 to 1, that an eligible frame is
	// dropped. The program works in steps of 2^-32.
	DropRate float64
	// Opcodes, when not empty, limits the eligible frames to those whose
	// sdx opcode (the byte at offset 1 of the UDP payload) is listed. Each
	// must be below 32. Empty: every sdx frame to Port is eligible, also
	// one too short to have an opcode.
	Opcodes []uint8
	// Seed seeds the generators, one per CPU: the same seed gives the same
	// drops for the same eligible frames on the same CPU. Every seed,
	// 0 included, is a seed.
	Seed uint64
	// DropNext drops the next DropNext eligible frames, counted over all
	// CPUs, whatever their draw; then DropRate alone decides again.
	DropNext uint32
}

// FaultStats are the program's counters summed over all CPUs. Every run of
// the program adds one to Seen and one to exactly one of Dropped and
// Passed, and one to Eligible for an eligible frame; so whenever the
// program is not running Seen == Dropped + Passed and Dropped <= Eligible.
type FaultStats struct {
	Seen     uint64 // frames the program ran on
	Eligible uint64 // frames eligible for a drop: each took one draw
	Dropped  uint64 // eligible frames dropped (XDP_DROP)
	Passed   uint64 // all other frames (XDP_PASS), eligible or not
}

// LoadFault loads sdx_fault into the kernel. The program is not attached
// and, until Configure, passes every frame.
func LoadFault() (*Fault, error) {
	spec, err := loadFault()
	if err != nil {
		return nil, fmt.Errorf("load fault: %w", err)
	}
	f := &Fault{}
	err = errLoadFrags
	if loadFrags {
		err = spec.LoadAndAssign(&f.objs, nil)
	}
	if err != nil {
		// Before Linux 5.18: the plain program alone (see LoadSteer).
		var plain struct {
			Prog *ebpf.Program `ebpf:"sdx_fault_plain"`
			faultMaps
		}
		if perr := spec.LoadAndAssign(&plain, nil); perr != nil {
			if errors.Is(perr, ebpf.ErrNotSupported) {
				perr = &KernelFeatureError{Feature: "the fault program (XDP, per-CPU arrays, spin locks in maps)", Minimum: MinKernel, Err: perr}
			}
			return nil, fmt.Errorf("load fault: %w", perr)
		}
		f.objs.SdxFaultPlain, f.objs.faultMaps = plain.Prog, plain.faultMaps
		f.fragsErr = &KernelFeatureError{Feature: "frags-aware XDP programs (BPF_F_XDP_HAS_FRAGS)", Minimum: MinKernelFrags, Err: err}
	}
	return f, nil
}

// FragsErr says why the frags-aware program was not loaded (a
// *KernelFeatureError); nil when it was.
func (f *Fault) FragsErr() error { return f.fragsErr }

// Program returns the XDP program to attach with Attach: the frags-aware
// one when the kernel loaded it, else the plain one. It stays owned by f:
// do not close it. After Close it is a closed program.
func (f *Fault) Program() *ebpf.Program {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.objs.SdxFault != nil {
		return f.objs.SdxFault
	}
	return f.objs.SdxFaultPlain
}

// Configure replaces the settings and reseeds every CPU's generator. It may
// be called while the program is attached; a frame the program judges
// during the call may see the old settings, the new ones, or some of each.
// The counters keep counting.
func (f *Fault) Configure(c FaultConfig) error {
	if c.Port == 0 {
		return fmt.Errorf("configure fault: port 0: %w", ErrPort)
	}
	if !(c.DropRate >= 0 && c.DropRate <= 1) {
		return fmt.Errorf("configure fault: drop rate %v is not between 0 and 1", c.DropRate)
	}
	var mask uint32
	for _, op := range c.Opcodes {
		if op >= 32 {
			return fmt.Errorf("configure fault: opcode %d: the mask holds opcodes 0 to 31", op)
		}
		mask |= 1 << op
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("configure fault: %w", err)
	}
	seeds := make([]faultRngState, ncpu)
	for cpu := range seeds {
		seeds[cpu].State = faultSeed(c.Seed, cpu)
	}
	settings := faultConfig{
		DropNext:  c.DropNext,
		Threshold: faultThreshold(c.DropRate),
		Opcodes:   mask,
		Port:      c.Port,
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("configure fault: %w", ErrClosed)
	}
	if err := f.objs.Rng.Update(uint32(0), seeds, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("configure fault: seed: %w", err)
	}
	// BPF_F_LOCK: the program decrements DropNext under the value's lock.
	if err := f.objs.Settings.Update(uint32(0), &settings, ebpf.UpdateLock); err != nil {
		return fmt.Errorf("configure fault: %w", err)
	}
	return nil
}

// Stats returns the counters summed over all CPUs.
func (f *Fault) Stats() (FaultStats, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return FaultStats{}, fmt.Errorf("fault stats: %w", ErrClosed)
	}
	var per []faultCounters
	if err := f.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return FaultStats{}, fmt.Errorf("fault stats: %w", err)
	}
	var st FaultStats
	for _, c := range per {
		st.Seen += c.Seen
		st.Eligible += c.Eligible
		st.Dropped += c.Dropped
		st.Passed += c.Passed
	}
	return st, nil
}

// Close releases the program and maps. Attachments keep the program and
// its settings alive until their links are closed. Close is idempotent.
func (f *Fault) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if err := f.objs.Close(); err != nil {
		return fmt.Errorf("close fault: %w", err)
	}
	return nil
}

// faultThreshold turns a drop rate into the program's threshold: a draw
// whose high 32 bits are below it drops the frame. 1 gives 1<<32, which
// every draw is below.
func faultThreshold(rate float64) uint64 {
	return uint64(math.Round(rate * (1 << 32)))
}

// faultSeed returns the generator state CPU cpu starts from: the (cpu+1)-th
// output of splitmix64 seeded with seed, so that the CPUs' sequences are
// unrelated.
func faultSeed(seed uint64, cpu int) uint64 {
	var x uint64
	for range cpu + 1 {
		x = splitmix64(&seed)
	}
	return x
}

// splitmix64 advances *state and returns its next output, exactly as
// fault.c does for every eligible frame.
func splitmix64(state *uint64) uint64 {
	*state += 0x9e3779b97f4a7c15
	z := *state
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
