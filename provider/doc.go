// Package provider is sdx's SAN service provider: reliable, connection-
// oriented stream sockets over a datagram Link, with the overlapped SPI of
// the Windows Sockets Direct model (Startup, Socket, Bind, Listen, Accept,
// Connect, Send, Recv, EventSelect, Duplicate, CloseSocket) in Go form.
//
// The protocol core (connection state machine, reliability, flow and
// congestion control; the wire codec is internal/wire) has no clock and no
// goroutines of its own: it runs on whichever goroutine holds the poller
// role and talks to the network only through a Link. The AF_XDP data path
// is one Link, in package xdplink; memnet.Network gives an in-memory one
// with seeded loss, duplication, reordering and delay for tests that need
// no root. Neither imports this package: each satisfies Link as it
// stands.
//
// Where each concern lives:
//
//	engine.go     the engine: its configuration, counters and the poll step
//	endpoint.go   the endpoint table, the port table, release
//	state.go      the endpoint states and their diagram
//	listen.go     listen, accept, half-open children, the listener part
//	handshake.go  connect, the cookie retry, established, the handshake part
//	cookie.go     the listener's cookie MAC
//	input.go      input dispatch: decode, match, RFC 5961 checks
//	output.go     output framing, control frames, the hand-over to the link
//	timers.go     the timer heap and one handler per timer (expiredRetransmit, ...)
//	close.go      the hard close (CloseSocket, abort), fail, resets taken
//	sender.go     a connection's send side: segments, SACK scoreboard, sending
//	receiver.go   its receive side: in-order and out-of-order data, acks owed
//	credit.go     the buffer pool's halves, windows and writers waiting
//	buffers.go    the buffer pool itself
//	cc.go         congestion control (CUBIC or NewReno, DCTCP-style ECN)
//	rtt.go        RTT and RTO estimation
//	peer.go       the peer stacks' liveness: heartbeat, incarnation
//	unreach.go    ICMP port unreachable from a peer's host
//	socket.go     sockets, the slot table and the synchronous verbs
//	ops.go        operations, completion queues and the submission ring
//	apply.go      the poller's side of the SPI: applying operations, progress
//	direct.go     the direct verbs (RecvWait, SendWait, WaitEnd) streams use
//	crowd.go      adaptive polling: spin only while a core would be idle
//	snapshot.go   per-connection figures (ConnStats, ConnInfo)
//	stats.go      the stack's counters (Stats)
//	config.go     Config, its defaults and validation
//	errors.go     the errors the verbs return
//	poller.go     the poller role: who holds it and how it is handed over
//	provider.go   Startup, Cleanup and the Provider
//	link.go       the Link interface and its optional capabilities (Lender, Holder, ECNLink)
//
// Copies. A send copies the caller's bytes once, into a buffer of the
// pool; on a link that lends the pool its memory (the AF_XDP link's UMEM
// frames; see Lender), the segment goes out, and out again if lost, from
// there. A receive copies once, from the UMEM frame into the caller's
// buffer: at once when a receive waits (Stats.RecvDirect), else when the
// caller reads, the data having waited in the frame it arrived in, on a
// link that keeps frames for their reader (see Holder; Stats.RecvHeld).
// Data under half a datagram, data beyond a hole, and data beyond what
// the link holds (its HoldCap, shared among the endpoints) wait in pool
// buffers instead, and are copied twice.
package provider
