package bpf

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Disorder is the loaded sdx_disorder program with its maps: a duplicator
// and reorderer for tests, the partner of Fault's loss. Attach it with
// AttachEgress to a hop's port, where it judges the frames leaving toward
// the host behind that port (see the package documentation, "Duplication
// and reordering"). Until the first Configure every frame passes.
//
// Every method may be called from any goroutine; Close waits for calls in
// progress and is idempotent. Closing a Disorder does not detach the
// program: an attachment holds its own reference until its link is
// closed, and the program keeps the settings it had.
type Disorder struct {
	// mu guards objs against Close: Program, AttachEgress and Stats hold
	// it for reading; Configure and Close hold it for writing, so that one
	// Configure's seeds and settings go in together.
	mu     sync.RWMutex
	closed bool
	objs   disorderObjects
}

// DisorderConfig says which frames sdx_disorder duplicates and delays. A
// frame is eligible when it is an sdx frame (as sdx_steer parses it) to
// Port and, if Opcodes is not empty, its opcode is one of Opcodes. Each
// eligible frame takes one draw, which duplicates it with probability
// DupRate and, independently, delays it with probability DelayRate. Every
// other frame passes untouched.
type DisorderConfig struct {
	// Port is the UDP destination port of sdx frames, host byte order.
	Port uint16
	// DupRate is the probability, from 0 to 1, that an eligible frame is
	// sent twice: a copy leaves the port at once, undelayed, ahead of the
	// frame itself. The program works in steps of 2^-32.
	DupRate float64
	// DelayRate is the probability, from 0 to 1, that an eligible frame is
	// put in DelayClass, to be overtaken by the frames after it.
	DelayRate float64
	// DelayClass is the skb->priority a delayed frame gets: the handle
	// (major<<16 | minor) of a slow leaf class of the port's htb qdisc,
	// which htb then queues it in (internal/testbed.Hop.AddDelayClass
	// builds one). 0 delays nothing; it is required when DelayRate is not
	// 0.
	DelayClass uint32
	// Opcodes, when not empty, limits the eligible frames to those whose
	// sdx opcode (the byte at offset 1 of the UDP payload) is listed. Each
	// must be below 32.
	Opcodes []uint8
	// Seed seeds the generators, one per CPU, as FaultConfig.Seed does:
	// the same seed gives the same fates for the same eligible frames on
	// the same CPU.
	Seed uint64
}

// DisorderStats are the program's counters summed over all CPUs. Every
// run adds one to Seen and one to exactly one of Clones (a copy the
// program made, passing once) and Judged; so whenever the program is not
// running Seen == Clones + Judged, Eligible <= Judged, and Duplicated +
// DupFailed <= Eligible, Delayed <= Eligible.
type DisorderStats struct {
	Seen       uint64 // frames the program ran on
	Clones     uint64 // its own copies, passed without a draw
	Judged     uint64 // every other frame
	Eligible   uint64 // judged frames eligible: each took one draw
	Duplicated uint64 // eligible frames sent out twice
	DupFailed  uint64 // eligible frames whose copy bpf_clone_redirect refused
	Delayed    uint64 // eligible frames put in the delay class
}

// LoadDisorder loads sdx_disorder into the kernel. The program is not
// attached and, until Configure, passes every frame.
func LoadDisorder() (*Disorder, error) {
	spec, err := loadDisorder()
	if err != nil {
		return nil, fmt.Errorf("load disorder: %w", err)
	}
	d := &Disorder{}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			err = &KernelFeatureError{Feature: "the disorder program (TC, per-CPU arrays)", Minimum: MinKernel, Err: err}
		}
		return nil, fmt.Errorf("load disorder: %w", err)
	}
	return d, nil
}

// Program returns the TC program. It stays owned by d: do not close it.
// After Close it is a closed program.
func (d *Disorder) Program() *ebpf.Program {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.objs.SdxDisorder
}

// AttachEgress attaches the program at the tcx egress hook of the
// interface ifindex in the calling thread's network namespace (use
// sys.InNetns for another), after any program already there. It judges
// what leaves through the interface; its copies leave through it too.
// Closing the link detaches it.
func (d *Disorder) AttachEgress(ifindex int) (link.Link, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, fmt.Errorf("attach disorder: %w", ErrClosed)
	}
	l, err := attachTCXEgress(d.objs.SdxDisorder, ifindex)
	if err != nil {
		return nil, fmt.Errorf("attach disorder: %w", err)
	}
	return l, nil
}

// attachTCXEgress attaches prog at the tcx egress hook of ifindex, after
// any program already there.
func attachTCXEgress(prog *ebpf.Program, ifindex int) (link.Link, error) {
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    ebpf.AttachTCXEgress,
	})
	if err != nil {
		err = fmt.Errorf("ifindex %d at tcx egress: %w", ifindex, err)
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, &KernelFeatureError{Feature: "TC attach through bpf_link (tcx)", Minimum: MinKernelTCX, Err: err}
		}
		return nil, err
	}
	return l, nil
}

// Configure replaces the settings and reseeds every CPU's generator. It
// may be called while the program is attached; a frame the program judges
// during the call may see the old settings, the new ones, or some of each.
// The counters keep counting.
func (d *Disorder) Configure(c DisorderConfig) error {
	if c.Port == 0 {
		return fmt.Errorf("configure disorder: port 0: %w", ErrPort)
	}
	if !(c.DupRate >= 0 && c.DupRate <= 1) {
		return fmt.Errorf("configure disorder: duplication rate %v is not between 0 and 1", c.DupRate)
	}
	if !(c.DelayRate >= 0 && c.DelayRate <= 1) {
		return fmt.Errorf("configure disorder: delay rate %v is not between 0 and 1", c.DelayRate)
	}
	if c.DelayRate != 0 && c.DelayClass == 0 {
		return errors.New("configure disorder: a delay rate needs a delay class")
	}
	var mask uint32
	for _, op := range c.Opcodes {
		if op >= 32 {
			return fmt.Errorf("configure disorder: opcode %d: the mask holds opcodes 0 to 31", op)
		}
		mask |= 1 << op
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("configure disorder: %w", err)
	}
	seeds := make([]disorderRngState, ncpu)
	for cpu := range seeds {
		seeds[cpu].State = faultSeed(c.Seed, cpu)
	}
	settings := disorderConfig{
		DupThreshold:   faultThreshold(c.DupRate),
		DelayThreshold: faultThreshold(c.DelayRate),
		DelayClass:     c.DelayClass,
		Opcodes:        mask,
		Port:           c.Port,
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("configure disorder: %w", ErrClosed)
	}
	if err := d.objs.Rng.Update(uint32(0), seeds, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("configure disorder: seed: %w", err)
	}
	if err := d.objs.Settings.Update(uint32(0), &settings, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("configure disorder: %w", err)
	}
	return nil
}

// Stats returns the counters summed over all CPUs.
func (d *Disorder) Stats() (DisorderStats, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return DisorderStats{}, fmt.Errorf("disorder stats: %w", ErrClosed)
	}
	var per []disorderCounters
	if err := d.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return DisorderStats{}, fmt.Errorf("disorder stats: %w", err)
	}
	var st DisorderStats
	for _, c := range per {
		st.Seen += c.Seen
		st.Clones += c.Clones
		st.Judged += c.Judged
		st.Eligible += c.Eligible
		st.Duplicated += c.Duplicated
		st.DupFailed += c.DupFailed
		st.Delayed += c.Delayed
	}
	return st, nil
}

// Close releases the program and maps. Attachments keep the program and
// its settings alive until their links are closed. Close is idempotent.
func (d *Disorder) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if err := d.objs.Close(); err != nil {
		return fmt.Errorf("close disorder: %w", err)
	}
	return nil
}
