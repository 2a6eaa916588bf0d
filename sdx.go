// Package sdx is the switch of Sockets Direct over XDP: reliable stream
// sockets for Go programs whose data path bypasses the kernel through
// AF_XDP, behind the net.Conn and net.Listener interfaces.
//
// As in Windows Sockets Direct, the switch sits on a SAN service provider
// (package provider), which owns connections and their hard close. The
// switch gives applications what they expect of a socket on top of it:
// blocking Read and Write with deadlines, graceful close and SO_LINGER
// (SetLinger), half close (CloseWrite), and a fallback to kernel TCP when
// the peer is not reachable over sdx.
//
// A Stack attaches a provider to one interface (inside a network
// namespace, if asked). Listen and Dial (or ListenConfig and Dialer, for
// options) then work with ordinary "host:port" addresses:
//
//	st, err := sdx.NewStack(sdx.Config{Netns: "blue", Interface: "eth0"})
//	...
//	ln, err := sdx.Listen("tcp", ":8080")       // sdx and kernel TCP, same port
//	c, err := sdx.Dial("tcp", "198.18.0.2:8080") // sdx if the peer answers, else TCP
//	fmt.Println(c.(*sdx.Conn).Path())           // "sdx" or "tcp"
//
// A listener accepts both sdx and kernel TCP connections on its address
// and port. A dial tries sdx when the kernel's route to the destination
// leaves through a stack's interface; a peer that does not answer the
// connect within Dialer.ProbeTimeout does not speak sdx, and the dial
// falls back to kernel TCP. A refusal, reset or "host unreachable" from an
// sdx peer is final. docs/SWITCH.md gives the rules, the defaults and the
// linger table.
//
// Threads: every exported method may be called from any goroutine. Read
// and Write copy straight between the caller's slice and the provider's
// buffers through the provider's direct verbs; a goroutine blocked in
// them takes the provider's poller role when it is free, and otherwise
// waits, by default parked in the Go runtime's netpoller as a goroutine
// blocked on a kernel socket is (DefaultPollMode).
package sdx
