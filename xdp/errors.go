package xdp

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

var (
	// ErrConfig wraps every configuration error; the message says what to change.
	ErrConfig = errors.New("xdp: bad configuration")
	// ErrFramesHeld is returned by Close when the owner still held frames;
	// they are reclaimed, but the owner leaked them.
	ErrFramesHeld = errors.New("xdp: frames still held at close")
)

// LinkError reports that the interface under a queue is down or gone. It
// matches errors.Is(err, syscall.ENETDOWN) whatever the kernel said, so
// callers test one condition, and it unwraps to the kernel's errno.
type LinkError struct {
	Op        string
	Interface string
	Err       error // ENETDOWN, ENXIO (interface gone), ...
}

func (e *LinkError) Error() string {
	return fmt.Sprintf("xdp: %s on %s: %v", e.Op, e.Interface, e.Err)
}

func (e *LinkError) Unwrap() error { return e.Err }

// Is makes every LinkError match ENETDOWN.
func (e *LinkError) Is(target error) bool { return target == unix.ENETDOWN }

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}
