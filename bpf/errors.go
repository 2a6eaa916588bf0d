package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// MinKernel is the oldest upstream Linux release the programs and loaders of
// this package work on. See the package documentation for why.
const MinKernel = "5.9"

// MinKernelFrags is the first release that loads frags-aware XDP programs
// (BPF_F_XDP_HAS_FRAGS, bpf_xdp_get_buff_len). Before it the loaders fall
// back to the plain programs, and drivers such as veth refuse native XDP at
// MTUs above a page.
const MinKernelFrags = "5.18"

// MinKernelTCX is the first release that attaches TC programs through a
// bpf_link at tcx hooks (BPF_TCX_EGRESS), which Disorder.AttachEgress
// and Marker.AttachEgress use. Only the test tooling needs it.
const MinKernelTCX = "6.6"

var (
	// ErrClosed is returned by the methods of a closed Steer, Fault or
	// Disorder.
	ErrClosed = errors.New("closed")
	// ErrQueueRange is returned for a queue index outside [0, MaxQueues).
	ErrQueueRange = errors.New("queue index out of range")
	// ErrPort is returned by LoadSteer for port 0, which UDP cannot address.
	ErrPort = errors.New("invalid sdx port")
	// ErrAddr is returned by AddAddr for anything but an IPv4 prefix.
	ErrAddr = errors.New("invalid steer address")
)

// KernelFeatureError reports that the running kernel lacks something the
// programs or loaders need. It matches errors.Is(err, ebpf.ErrNotSupported)
// and also whatever Err matches.
type KernelFeatureError struct {
	Feature string // what is missing, e.g. "XDP attach through bpf_link"
	Minimum string // the first upstream Linux release that has it
	Err     error  // what the kernel or the loader said
}

func (e *KernelFeatureError) Error() string {
	return fmt.Sprintf("%s needs Linux %s or later: %v", e.Feature, e.Minimum, e.Err)
}

func (e *KernelFeatureError) Unwrap() []error { return []error{e.Err, ebpf.ErrNotSupported} }
