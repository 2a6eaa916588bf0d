package sdx

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/sdx-project/sdx/provider"
)

// Errors of the switch. The errors of a connection are the ones a socket
// user knows: Read and Write return *net.OpError values wrapping
// os.ErrDeadlineExceeded, net.ErrClosed, io.EOF or the provider's errno
// (errors.Is(err, syscall.ECONNRESET) after the peer's hard close).
var (
	// ErrStackClosed is the error of a connection or listener whose Stack
	// was closed under it. It matches net.ErrClosed.
	ErrStackClosed = fmt.Errorf("sdx: stack closed: %w", net.ErrClosed)

	// ErrNoStack is returned by Listen when no open Stack serves the
	// address, and by Dialer.DialContext when a Stack without a kernel
	// side (Config.Link) has no route for the destination.
	ErrNoStack = errors.New("sdx: no stack serves the address")

	// ErrConfig is returned by NewStack for a Config field out of range;
	// the message names the field and what to change. (A bad
	// Config.Provider field gives provider.ErrConfig, or
	// xdplink.ErrConfig where the AF_XDP link cannot lend the pool.)
	ErrConfig = errors.New("sdx: bad configuration")

	// errNoAnswer is the result of an sdx connect that got no answer within
	// the probe time: the peer does not speak sdx.
	errNoAnswer = errors.New("sdx: no answer to the connect request")
)

// final reports whether err, the outcome of an sdx connect, is a
// definitive answer from the peer: Windows Sockets Direct does not fall
// back to TCP after one, since TCP would fail the same way.
func final(err error) bool {
	if errors.Is(err, provider.ErrPortUnreach) {
		// The peer's kernel, not an sdx peer, refused: kernel TCP may work.
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH)
}

// isAborted reports whether err is the provider's "operation aborted".
func isAborted(err error) bool { return errors.Is(err, provider.ErrAborted) }
