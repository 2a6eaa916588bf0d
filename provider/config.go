package provider

import (
	"fmt"
	"math/bits"
	"net/netip"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
)

// Congestion names a congestion control algorithm (Config.Congestion).
type Congestion uint8

const (
	CongestionCubic   Congestion = iota // RFC 9438, the Linux kernel TCP default: fair to kernel flows on a shared port
	CongestionNewReno                   // RFC 5681 and 6582: halves on a loss, one segment a round trip
)

func (c Congestion) String() string {
	switch c {
	case CongestionCubic:
		return "cubic"
	case CongestionNewReno:
		return "newreno"
	}
	return fmt.Sprintf("Congestion(%d)", uint8(c))
}

// PollMode says how the poller waits for work.
type PollMode uint8

const (
	// PollDefault is the zero value: the provider polls adaptively; the
	// switch (sdx.NewStack) makes it PollPark.
	PollDefault PollMode = iota
	// PollAdaptive (the provider's default) spins for Config.Spin after
	// the last work, while no goroutine of the process waits for a CPU,
	// then sleeps in the link's Wait until input, a submission or a
	// timer. A goroutine blocked in a blocking verb takes the poller role
	// itself when it is free, so a ping-pong runs with one spinning
	// goroutine per process instead of two. Cost: up to one CPU while
	// traffic flows, none when idle; the first frame after an idle period
	// pays a wake-up (a few microseconds on veth). When a goroutine that
	// held the role for a moment returns, the dedicated poller takes it
	// back within about 200µs (it is not woken, to keep the other CPU
	// free): input for other sockets that arrives in that gap waits that
	// long.
	PollAdaptive
	// PollBusy never sleeps: whoever holds the poller role spins on the
	// link, the dedicated poller for the provider's lifetime, busy or
	// not, at the price of one full CPU. As in adaptive mode a goroutine
	// blocked in a blocking verb takes the role inline and spins itself,
	// so a request-response exchange has one spinner per process, not a
	// hand-off to the poller and back. The inline holder yields its CPU
	// as in adaptive mode: when it woke a goroutine, when another wants
	// the role, and at least once a millisecond; the dedicated poller
	// yields on every turn. The hand-back of the role is as in adaptive
	// mode.
	PollBusy
	// PollPark never spins: a goroutine that waits (a blocked verb, or
	// the dedicated poller) parks at once, in the Go runtime's netpoller
	// on the AF_XDP socket when it holds the poller role, on a channel
	// otherwise, exactly as a goroutine blocked on a kernel socket does.
	// Cost: no CPU while nothing arrives, whatever the number of
	// connections; each wake-up pays the runtime's netpoller and
	// scheduler (microseconds), where a spinning poller pays nothing.
	// It suits programs with more runnable goroutines than cores.
	PollPark
)

func (m PollMode) String() string {
	switch m {
	case PollDefault:
		return "default"
	case PollAdaptive:
		return "adaptive"
	case PollBusy:
		return "busy"
	case PollPark:
		return "park"
	}
	return "PollMode(?)"
}

// Upper bounds of Config's sizes and durations: generous for real use,
// and far enough from what would exhaust memory or overflow the engine's
// nanosecond clock that a typo or a "never" (math.MaxInt64) is refused
// at Startup with the field to change.
const (
	MaxSpin       = time.Second
	MaxBufferPool = 4 << 30 // bytes: Buffers × MTU
	// DefaultBufferPool bounds the default pool at jumbo MTUs, where
	// 8192 buffers would take 73 MiB (9000) or 532 MiB (65000).
	DefaultBufferPool = 32 << 20
	MaxOpsLimit       = 1 << 20
	MaxMaxRTO         = 2 * time.Minute
	MaxTimeout        = 24 * time.Hour
)

// Config configures a Provider. Zero fields take the defaults named in
// their comments.
type Config struct {
	// Link carries the provider's datagrams; the provider owns it from
	// Startup on and closes it in Cleanup. Required.
	Link Link

	// Mode is the polling mode (default PollAdaptive; sdx.NewStack's
	// default is PollPark).
	Mode PollMode
	// Spin is how long an adaptive poller keeps spinning after its last
	// work before it sleeps (default 50µs, at most MaxSpin; PollPark:
	// always 0).
	Spin time.Duration

	// MaxSockets is the size of the descriptor table (default 4096, at
	// most 1048574). Socket, Accept and Duplicate fail with EMFILE when
	// it is full.
	MaxSockets int
	// MaxConnections bounds the endpoints: sockets plus connections in
	// listeners' backlogs (default 2×MaxSockets, at most 1048574). A
	// connect request past it is rejected.
	MaxConnections int
	// MaxBacklog caps Listen's backlog (default 1024, at most 1048574,
	// the most connections a provider can hold).
	MaxBacklog int

	// SendBuffer is the unacknowledged plus unsent bytes one connection
	// may hold (default 256 KiB); RecvBuffer its received, unread bytes,
	// which is the window it grants (default 256 KiB). Each is between
	// 1 KiB and 1 GiB.
	SendBuffer, RecvBuffer int
	// Buffers is the number of datagram-sized buffers shared by all
	// connections (default 8192, at most DefaultBufferPool bytes: 11.5
	// MiB at a 1472-byte MTU, 30 MiB at 3798, 3739 buffers at 8972, 516
	// at 64972). It bounds
	// the provider's memory for data, however many connections there
	// are: half holds send data, half received data. The windows granted
	// are backed by the receive half (each connection's at most
	// RecvBuffer and its share of the half), so SendBuffer and RecvBuffer
	// are per-connection limits within that bound, not reservations.
	// The pool is one allocation of Buffers × MTU bytes, at most
	// MaxBufferPool (4 GiB). On a Lender (the AF_XDP link) the first
	// buffers (by default all of the default pool; xdplink's
	// Config.LendBuffers) are UMEM frames the link lends, so that data
	// is sent from where Send copied it; the default is then at least
	// what the link lends.
	Buffers int

	// MaxOps bounds the operations posted and not yet completed, all
	// sockets together (default 16384, at most MaxOpsLimit, 1<<20: about
	// 300 MiB of operations); a post past it fails with ENOBUFS.
	MaxOps int
	// SubmitQueue is the size of the submission ring, a power of two
	// (default 4096).
	SubmitQueue int

	// Retransmission timer bounds (defaults 20ms initial, 5ms min, 1s
	// max; MaxRTO at most MaxMaxRTO, 2 minutes) and the longest an ack
	// is delayed (default 200µs, below MinRTO). The floor
	// is far above a LAN round trip on purpose: a peer's poller that is
	// descheduled for a few milliseconds must not cost a window of
	// spurious retransmissions.
	InitialRTO, MinRTO, MaxRTO, AckDelay time.Duration
	// Pacing spreads what a connection's windows allow over the round
	// trip, in bursts of at most 16 segments, instead of sending it at
	// once (docs/PROTOCOL.md, "Congestion control"). Off by default: on
	// the 2-core test machine its timer wake-ups cost more goodput
	// through a shared 500 Mbit/s port than the bursts it avoids
	// (sdxbench -workload incast -pacing).
	Pacing bool

	// Congestion is the congestion window's growth and decrease:
	// CongestionCubic (the default, RFC 9438, as Linux's TCP) or
	// CongestionNewReno (RFC 5681). Both run on the same SACK loss
	// recovery and the same response to ECN marks.
	Congestion Congestion
	// Timeout is the dead-peer bound (default 10s): a connection that
	// hears nothing from its peer for this long, or a connect that gets no
	// answer, fails every pending operation with ETIMEDOUT. Keepalive
	// probes start after Timeout/3 of silence. At most MaxTimeout (24h):
	// a peer silent for a day is dead, and a bound keeps the timer
	// arithmetic far from overflow ("never" is not on offer).
	Timeout time.Duration
	// PeerTimeout is the liveness bound of a peer's stack (default 800ms,
	// at most Timeout): toward a peer that announced an incarnation in its
	// handshake (every sdx stack with heartbeats does), a peer from which
	// nothing at all is heard for this long, on any connection, is dead,
	// and every connection to it fails with ETIMEDOUT. To tell, the stacks
	// exchange heartbeats when no other frame passes between them: a
	// frame every 5/18 PeerTimeout each way while idle (9 a second at
	// the default, both ways together), none while their connections carry traffic; a
	// restarted peer is recognised at its first answer and its earlier
	// connections reset. A peer without an incarnation (an earlier sdx)
	// keeps the per-connection bound alone. Negative: no heartbeats.
	// At least 100ms.
	PeerTimeout time.Duration

	// Seed seeds the generator of connection tokens and ephemeral ports;
	// nil draws it from crypto/rand. Tests set it for repeatable runs.
	Seed *[32]byte

	// Incarnation is the number this stack announces to its peers, so
	// that they can tell it restarted (see PeerTimeout); zero draws one.
	// The providers of one stack's shards share one, so that a peer sees
	// them as the one stack they are.
	Incarnation uint64

	// Owns, if set, says which flows the provider may make connections
	// of: a connect binds only an ephemeral port lport for which
	// Owns(lport, peer) holds, and refuses a socket bound to another one
	// with ErrAddrNotAvail. Each provider of a sharded link sets it to
	// the flows of its shard (xdplink.ShardOf), which alone reach it.
	Owns func(lport uint16, peer netip.AddrPort) bool

	// PeerGone, if set, is called on the poller when an ICMP port
	// unreachable shows that the stack at peer is gone, after the
	// provider has failed its own connections to it; inc is the
	// incarnation they were made with (0: unknown). It must not block. A
	// stack with several pollers passes it on to the other providers'
	// PeerGone, whose connections the ICMP did not name.
	PeerGone func(peer netip.Addr, inc uint64)
}

func (c *Config) setDefaults() {
	d := defaultEngineConfig()
	def := func(v *int, x int) {
		if *v == 0 {
			*v = x
		}
	}
	defd := func(v *time.Duration, x time.Duration) {
		if *v == 0 {
			*v = x
		}
	}
	if c.Mode == PollDefault {
		c.Mode = PollAdaptive
	}
	defd(&c.Spin, 50*time.Microsecond)
	if c.Mode == PollPark {
		c.Spin = 0
	}
	def(&c.MaxSockets, 4096)
	if c.MaxSockets > 0 && c.MaxSockets <= maxConns {
		// Twice the sockets, within what connection ids can name.
		def(&c.MaxConnections, min(2*c.MaxSockets, maxConns))
	}
	def(&c.MaxBacklog, d.MaxBacklog)
	def(&c.SendBuffer, d.SendBuffer)
	def(&c.RecvBuffer, d.RecvBuffer)
	if c.Buffers == 0 && c.Link != nil && c.Link.MTU() > wire.HeaderLen {
		mtu := c.Link.MTU()
		c.Buffers = c.defaultBuffers(mtu)
		if l, ok := c.Link.(Lender); ok {
			// All that the link lends: it lent the default pool at the
			// interface's MTU, more buffers where the link's is lower.
			regions, per, _, _ := l.Lent()
			c.Buffers = max(c.Buffers, min(len(regions)*per, MaxBufferPool/mtu))
		}
	}
	def(&c.MaxOps, 16384)
	def(&c.SubmitQueue, 4096)
	defd(&c.InitialRTO, d.InitialRTO)
	defd(&c.MinRTO, d.MinRTO)
	defd(&c.MaxRTO, d.MaxRTO)
	defd(&c.AckDelay, d.AckDelay)
	defd(&c.Timeout, d.Timeout)
	defd(&c.PeerTimeout, d.PeerTimeout)
}

// validate checks c after defaults; each error says what to change.
func (c *Config) validate() error {
	switch {
	case c.Link == nil:
		return configErr("Config.Link is nil: pass the Link to send through (xdplink.New, or a memnet.Network's NewLink)")
	case c.Mode != PollAdaptive && c.Mode != PollBusy && c.Mode != PollPark:
		return configErr("Config.Mode %d is unknown: use PollAdaptive, PollBusy or PollPark", c.Mode)
	case c.Congestion != CongestionCubic && c.Congestion != CongestionNewReno:
		return configErr("Config.Congestion %d is unknown: use CongestionCubic or CongestionNewReno", c.Congestion)
	case c.Spin < 0 || c.Spin > MaxSpin:
		return configErr("Config.Spin %v is out of range: use 0..%v", c.Spin, MaxSpin)
	case c.MaxSockets < 1 || c.MaxSockets > maxConns:
		return configErr("Config.MaxSockets %d is out of range: use 1..%d (every socket is a connection, and connection ids name at most that many)", c.MaxSockets, maxConns)
	case c.MaxConnections < c.MaxSockets || c.MaxConnections > maxConns:
		return configErr("Config.MaxConnections %d must be between MaxSockets (%d) and %d", c.MaxConnections, c.MaxSockets, maxConns)
	case c.MaxBacklog < 1 || c.MaxBacklog > maxConns:
		return configErr("Config.MaxBacklog %d is out of range: use 1..%d", c.MaxBacklog, maxConns)
	case c.SendBuffer < 1024 || c.RecvBuffer < 1024:
		return configErr("Config.SendBuffer %d and RecvBuffer %d must be at least 1024 bytes", c.SendBuffer, c.RecvBuffer)
	case c.SendBuffer > 1<<30 || c.RecvBuffer > 1<<30:
		return configErr("Config.SendBuffer %d and RecvBuffer %d must be at most 1 GiB (the window field is 32 bits)", c.SendBuffer, c.RecvBuffer)
	case c.MaxOps < 1 || c.MaxOps > MaxOpsLimit:
		return configErr("Config.MaxOps %d is out of range: use 1..%d (each operation takes about 300 bytes, allocated at Startup)", c.MaxOps, MaxOpsLimit)
	case c.SubmitQueue < 2 || c.SubmitQueue > 1<<24 || bits.OnesCount(uint(c.SubmitQueue)) != 1:
		return configErr("Config.SubmitQueue %d must be a power of two between 2 and %d", c.SubmitQueue, 1<<24)
	case c.MaxRTO > MaxMaxRTO:
		return configErr("Config.MaxRTO %v is too long: use at most %v (the retransmission timer backs off to it)", c.MaxRTO, MaxMaxRTO)
	case c.Timeout > MaxTimeout:
		return configErr("Config.Timeout %v is too long: use at most %v (the dead-peer bound cannot be switched off)", c.Timeout, MaxTimeout)
	case c.MinRTO <= 0 || c.MaxRTO < c.MinRTO || c.InitialRTO < c.MinRTO || c.InitialRTO > c.MaxRTO:
		return configErr("RTO bounds: need 0 < MinRTO (%v) <= InitialRTO (%v) <= MaxRTO (%v)", c.MinRTO, c.InitialRTO, c.MaxRTO)
	case c.AckDelay < 0 || c.AckDelay >= c.MinRTO:
		return configErr("Config.AckDelay %v must be below MinRTO %v, or the peer retransmits what we are about to ack", c.AckDelay, c.MinRTO)
	case c.PeerTimeout > 0 && c.PeerTimeout < 100*time.Millisecond || c.PeerTimeout > MaxTimeout:
		return configErr("Config.PeerTimeout %v is out of range: use 100ms..%v, or negative for no heartbeats", c.PeerTimeout, MaxTimeout)
	case c.Timeout < 2*c.MaxRTO && c.Timeout < time.Second || c.Timeout <= c.MinRTO:
		return configErr("Config.Timeout %v is too short to tell a dead peer from a slow one: use at least 2×MaxRTO (%v) or 1s", c.Timeout, 2*c.MaxRTO)
	}
	mtu := c.Link.MTU()
	if mtu < wire.HeaderLen+64 {
		return configErr("the link's MTU %d is too small: sdx needs at least %d", mtu, wire.HeaderLen+64)
	}
	if c.Buffers < 1 || c.Buffers > MaxBufferPool/mtu {
		return configErr("Config.Buffers %d is out of range: the pool of Buffers × MTU (%d) bytes must be at most %d MiB, so use at most %d", c.Buffers, mtu, MaxBufferPool>>20, MaxBufferPool/mtu)
	}
	if need := c.minBuffers(mtu); c.Buffers < need {
		return configErr("Config.Buffers %d cannot hold one connection's buffers twice over (%d at MTU %d): raise Buffers or lower SendBuffer/RecvBuffer", c.Buffers, need, mtu)
	}
	return nil
}

// defaultBuffers is the default Buffers at mtu: the default engine's,
// within DefaultBufferPool, and at least c.minBuffers.
func (c *Config) defaultBuffers(mtu int) int {
	return max(min(defaultEngineConfig().Buffers, DefaultBufferPool/mtu), c.minBuffers(mtu))
}

// minBuffers is the smallest pool that holds one connection's send and
// receive buffers twice over at mtu.
func (c *Config) minBuffers(mtu int) int {
	return 2 * ((c.SendBuffer+c.RecvBuffer)/(mtu-wire.HeaderLen) + 4)
}

func (c *Config) engineConfig() engineConfig {
	return engineConfig{
		SendBuffer: c.SendBuffer,
		RecvBuffer: c.RecvBuffer,
		Buffers:    c.Buffers,
		MaxConns:   c.MaxConnections,
		MaxBacklog: c.MaxBacklog,
		InitialRTO: c.InitialRTO,
		MinRTO:     c.MinRTO,
		MaxRTO:     c.MaxRTO,
		AckDelay:   c.AckDelay,
		Timeout:    c.Timeout,
		Pacing:     c.Pacing,
		Reno:       c.Congestion == CongestionNewReno,

		PeerTimeout: max(min(c.PeerTimeout, c.Timeout), 0),
		Incarnation: c.Incarnation,
		Owns:        c.Owns,
		PeerGone:    c.PeerGone,
	}
}
