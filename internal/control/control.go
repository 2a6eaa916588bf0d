// Package control is the local control socket of an sdx stack: how
// `sdx stat` reads a running process's stacks without any change to its
// code. Each stack serves one Unix stream socket at a filesystem path,
// Dir/<pid>-<n>.sock (a path, not an abstract name: abstract sockets
// belong to a network namespace, and a stack's process and `sdx stat`
// may sit in different ones). The socket is mode 0600 and the server
// checks the caller's uid (SO_PEERCRED): root or the stack's own user.
// Sockets of processes that no longer exist are removed when a stack
// starts and when a client lists them.
//
// The protocol is one JSON request line, one JSON reply line, per
// connection. The reply's types are below; `sdx stat` prints its human
// views from them.
package control

import (
	"net/netip"

	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// DefaultDir is where stacks put their control sockets unless told
// otherwise.
const DefaultDir = "/run/sdx"

// Commands of a Request.
const (
	CmdStack    = "stack"    // Reply.Stack
	CmdConns    = "conns"    // Reply.Stack and Reply.Conns
	CmdCounters = "counters" // Reply.Stack and Reply.Counters
	// CmdCapture streams the frames the stack's link sends and receives:
	// after the reply line (empty, or Error), a pcap file (link type
	// Ethernet) until the client closes its side or the stack closes.
	CmdCapture = "capture"
)

// Request is what a client sends.
type Request struct {
	Cmd     string `json:"cmd"`
	Snaplen int    `json:"snaplen,omitempty"` // CmdCapture: bytes kept of each frame (0: all)
}

// Reply is what a stack answers; Error is set, and nothing else, when it
// refuses.
type Reply struct {
	Error    string    `json:"error,omitempty"`
	Stack    *Stack    `json:"stack,omitempty"`
	Conns    []Conn    `json:"conns,omitempty"`
	Counters *Counters `json:"counters,omitempty"`
}

// Stack describes one stack.
type Stack struct {
	PID         int               `json:"pid"`
	Socket      string            `json:"socket"` // the control socket's path
	Netns       string            `json:"netns"`  // empty: the process's own
	Interface   string            `json:"interface"`
	Addr        netip.Addr        `json:"addr"`
	Prefix      netip.Prefix      `json:"prefix"`
	Port        uint16            `json:"port"`
	MTU         int               `json:"mtu"`
	XDPMode     string            `json:"xdp_mode"` // native, generic; empty for a stack on a Link
	XDPFrags    bool              `json:"xdp_frags"`
	XDPFallback string            `json:"xdp_fallback,omitempty"`
	MultiBuffer bool              `json:"multi_buffer"`
	PollMode    string            `json:"poll_mode"`
	Pollers     int               `json:"pollers"` // Config.Pollers: each serves a share of Queues
	Queues      []Queue           `json:"queues"`
	Conns       int               `json:"conns"`     // sdx connections, listeners not counted
	TCPConns    int               `json:"tcp_conns"` // open kernel TCP connections it dialled or accepted
	Listeners   int               `json:"listeners"`
	Fallbacks   map[string]uint64 `json:"fallbacks"` // by reason, zeros included
	// Capture: whether a capture runs, and what it recorded and dropped
	// (its ring was full) so far.
	Capturing      bool   `json:"capturing"`
	CaptureFrames  uint64 `json:"capture_frames"`
	CaptureDropped uint64 `json:"capture_dropped"`
}

// Queue describes one AF_XDP queue of a stack.
type Queue struct {
	ID              int    `json:"id"`
	Mode            string `json:"mode"`                        // copy or zero-copy
	ZeroCopyRefused string `json:"zero_copy_refused,omitempty"` // why copy mode
}

// Conn is one connection (or listener) of a stack: an sdx one with the
// provider's figures, or a kernel TCP one with its fallback reason and
// the kernel's figures.
type Conn struct {
	Path     string         `json:"path"` // sdx or tcp
	State    string         `json:"state"`
	Local    netip.AddrPort `json:"local"`
	Peer     netip.AddrPort `json:"peer"`
	RecvQ    int            `json:"recv_q"`
	SendQ    int            `json:"send_q"`
	Fallback string         `json:"fallback,omitempty"` // tcp: why
	// SDX holds the provider's figures of an sdx connection; TCP the
	// kernel's of a tcp one.
	SDX *provider.ConnStats `json:"sdx,omitempty"`
	TCP *TCPInfo            `json:"tcp,omitempty"`
}

// TCPInfo is what the kernel says about a kernel TCP connection.
type TCPInfo struct {
	RTTMicros    uint32 `json:"rtt_us"`
	RTTVarMicros uint32 `json:"rttvar_us"`
	Retransmits  uint32 `json:"retransmits"`
	BytesAcked   uint64 `json:"bytes_acked"`
	BytesRecv    uint64 `json:"bytes_received"`
}

// Counters are a stack's counters: the provider's, its AF_XDP link's
// (with XDP_STATISTICS per queue in Link.Queues) and the switch's
// fallbacks.
type Counters struct {
	Provider  provider.Stats    `json:"provider"`
	Link      xdplink.Stats     `json:"link"`
	Fallbacks map[string]uint64 `json:"fallbacks"`
}
