// Package bench is the side-by-side harness behind cmd/sdxbench: the same
// workloads (ping-pong latency, one-way message rate, bulk throughput,
// connection setup rate) over each system a user could pick instead of sdx
// on the same veth pair, and over the raw AF_XDP floor.
//
// # Systems
//
// A System moves messages between a client end in namespace A and a server
// end in namespace B:
//
//   - sdx-busy, sdx-adaptive: sdx's reliable streams, one provider on an
//     AF_XDP link in each namespace, through the provider's blocking verbs, in
//     busy and in adaptive polling;
//   - tcp-gonet: Go net TCP with TCP_NODELAY, the blocking Go API;
//   - tcp-spin:  kernel TCP on non-blocking raw descriptors with
//     TCP_NODELAY, the reader spinning on read(2) through EAGAIN;
//   - udp-spin:  kernel UDP on connected non-blocking descriptors, the
//     reader spinning the same way;
//   - xsk-floor: raw AF_XDP (package xdp) with no protocol at all: the
//     client builds a frame, the server turns it around in place. It is
//     the floor under any protocol over AF_XDP on this link. A message is
//     one frame, at most FrameMessage(mtu) bytes; a longer ping-pong
//     message goes as frames of about equal size, one kick for all, each
//     turned around as it arrives. Its bulk (a Flooder) is frames of that
//     size one way, 32 per kick, counted as payload.
//
// # Threads
//
// Every spinning loop runs on its own OS thread, locked with
// runtime.LockOSThread and pinned with sched_setaffinity: the client's on
// Hosts.ClientCPU, the server's on Hosts.ServerCPU. Only those threads are
// pinned, never the process: confining the Go runtime's own threads to a
// busy core multiplies tail latency. tcp-gonet runs on ordinary
// goroutines, as a Go program using net would. In sdx-busy and
// sdx-adaptive the goroutine blocked in a verb becomes the poller and
// spins, so its thread is pinned; the providers' dedicated poller
// goroutines are not.
//
// # Bounds
//
// Every loop is bounded twice, by a count and by a Bound (a deadline and
// a stop flag that an interrupt or the deadline sets), and every spinning
// loop checks its Bound every few dozen empty polls; calls that block
// elsewhere (Go net, the provider) are ended by deadlines or by closing
// their sockets when the Bound stops. A run ends on time even when a peer
// is gone or a datagram is lost.
package bench
