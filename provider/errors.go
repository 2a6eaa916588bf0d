package provider

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// Errors returned by the provider. Each one is, or matches with errors.Is,
// the errno a socket user expects, so both
//
//	errors.Is(err, provider.ErrConnReset)
//	errors.Is(err, syscall.ECONNRESET)
//
// hold. Completions carry these values unwrapped, except that ErrNetDown
// may come as the link's own error, which matches it and says more (from
// the AF_XDP link, an *xdp.LinkError: the interface was down or gone); synchronous
// verbs may wrap them with a short context. docs/ERRORS.md maps each to
// its Winsock code.
var (
	ErrNotSock      error = syscall.ENOTSOCK      // not a descriptor of a live socket (closed, stale, never issued)
	ErrConnRefused  error = syscall.ECONNREFUSED  // the peer answered the connect with a reject
	ErrConnReset    error = syscall.ECONNRESET    // the peer reset the connection
	ErrTimedOut     error = syscall.ETIMEDOUT     // the peer stopped answering within the keepalive bound
	ErrNetDown      error = syscall.ENETDOWN      // the link is down
	ErrHostUnreach  error = syscall.EHOSTUNREACH  // the link has no route or neighbour for the peer
	ErrAddrInUse    error = syscall.EADDRINUSE    // the port is bound by another socket
	ErrAddrNotAvail error = syscall.EADDRNOTAVAIL // the address is not this host's, or the port is zero
	ErrInvalid      error = syscall.EINVAL        // the verb does not fit the socket's state or its arguments
	ErrNotConn      error = syscall.ENOTCONN      // the socket is not connected
	ErrIsConn       error = syscall.EISCONN       // the socket is already connected
	ErrAlready      error = syscall.EALREADY      // a connect is already in progress
	ErrMsgSize      error = syscall.EMSGSIZE      // a datagram is larger than the link's MTU; see also FrameSizeError
	ErrNoBufs       error = syscall.ENOBUFS       // out of operations, completion slots or transmit slots
	ErrMFile        error = syscall.EMFILE        // the socket table is full
	ErrShutdown     error = syscall.ESHUTDOWN     // send after Shutdown
	ErrAborted      error = abortedError{}        // the operation was cancelled by CloseSocket or Cleanup
	ErrPortUnreach  error = portUnreachError{}    // a connect drew an ICMP port unreachable: no sdx stack at the peer's host; matches ECONNREFUSED
	ErrInterrupted  error = errInterrupted{}      // a direct verb's Waiter was woken first: nothing was taken or given, call again
	ErrConfig             = errors.New("provider: bad configuration")
)

// abortedError is WSA_OPERATION_ABORTED: the operation was cancelled
// because its socket was closed. It matches syscall.ECANCELED.
type abortedError struct{}

func (abortedError) Error() string        { return "operation aborted" }
func (abortedError) Is(target error) bool { return target == syscall.ECANCELED }

// FrameSizeError fails a connection whose full-size frames never reach the
// peer while smaller frames do: the peer's receive path holds less than it
// announced, or something between the hosts has a smaller MTU. It matches
// EMSGSIZE.
type FrameSizeError struct {
	Size int        // datagram bytes (sdx header and data) of the frames that vanish
	Peer netip.Addr // the peer they do not reach
}

func (e *FrameSizeError) Error() string {
	return fmt.Sprintf("provider: frames of %d bytes do not reach %v (smaller frames do)", e.Size, e.Peer)
}

func (e *FrameSizeError) Unwrap() error { return ErrMsgSize }

// portUnreachError is a connect refused by the peer's kernel rather than
// by an sdx peer: nothing takes sdx frames there. It matches
// syscall.ECONNREFUSED; the switch tells it apart, since kernel TCP to
// that host may still work.
type portUnreachError struct{}

func (portUnreachError) Error() string        { return "connection refused: no sdx stack at the peer" }
func (portUnreachError) Is(target error) bool { return target == syscall.ECONNREFUSED }

type errInterrupted struct{}

func (errInterrupted) Error() string { return "provider: interrupted by Waiter.Wake" }

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}
