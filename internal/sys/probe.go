package sys

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ProbeState is what a ProbePair's near end shows a non-blocking read.
type ProbeState uint8

const (
	ProbeIdle     ProbeState = iota // would block (EAGAIN): alive, nothing to read
	ProbeReadable                   // one byte waits: data waits on the connection
	ProbeDead                       // end of file (0): the connection is over, for good
)

// ProbePair is a connected pair of non-blocking Unix stream sockets that
// stands in for the descriptor of a connection that has none (an sdx
// connection): its near end reads as a kernel socket of that connection
// would, for the health check a connection pool makes before it reuses
// a connection (a non-blocking read, or recv with MSG_PEEK, of one
// byte). The far end is ours: a byte written there makes the near end
// readable, and shutting it down gives the near end end of file. The
// bytes are markers, never stream data. A ProbePair costs two
// descriptors and no memory beyond the kernel's for two idle sockets.
//
// Not safe for concurrent use; its owner locks.
type ProbePair struct {
	near, far int
	state     ProbeState
}

// NewProbePair makes a pair in state ProbeIdle.
func NewProbePair() (*ProbePair, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	return &ProbePair{near: fds[0], far: fds[1]}, nil
}

// Fd is the near end, the descriptor a health check reads.
func (p *ProbePair) Fd() int { return p.near }

// Set makes the near end show s. ProbeDead is final: later calls change
// nothing.
func (p *ProbePair) Set(s ProbeState) error {
	if p.state == ProbeDead {
		return nil
	}
	// Markers a check did not take, and whatever a caller wrote on the
	// near end, go first: the near end then shows exactly s.
	drain(p.near)
	drain(p.far)
	switch s {
	case ProbeReadable:
		if _, err := unix.Write(p.far, []byte{1}); err != nil {
			return fmt.Errorf("probe mark: %w", err)
		}
	case ProbeDead:
		if err := unix.Shutdown(p.far, unix.SHUT_WR); err != nil {
			return fmt.Errorf("probe shutdown: %w", err)
		}
	}
	p.state = s
	return nil
}

func drain(fd int) {
	var b [64]byte
	for {
		n, err := unix.Read(fd, b[:])
		if n <= 0 || err != nil {
			return
		}
	}
}

// Close closes both ends.
func (p *ProbePair) Close() error {
	err := unix.Close(p.near)
	if e := unix.Close(p.far); err == nil {
		err = e
	}
	return err
}
