package provider

import "fmt"

// State is where an endpoint (the engine's side of a socket) is in its
// life. Transitions, all made by the poller:
//
//	               Bind               Listen
//	Closed ─────────────> Bound ─────────────> Listening
//	  │                     │                      │ connect in
//	  │ Connect             │ Connect              v
//	  │ (auto-bind)         │              Established, half-open ── 5 accepts unanswered ──> (dropped)
//	  └─────────┐  ┌────────┘                      │
//	            v  v                               │ any valid frame from the connector
//	retry ┌─> Connecting ── reject ───> Failed     v (a connect with a valid cookie: at once)
//	(again│    │  │     ── time-out ─>   │     Established (child, in the backlog)
//	with  └────┘  │ accept, or a valid   │
//	cookie)       v frame of the acceptor│
//	         Established ── reset in ───> Failed (ECONNRESET)
//	              │      ── dead peer ──> Failed (ETIMEDOUT)
//	              │
//	  any state ──┴── hard close (CloseSocket): reset out, memory freed ──> (gone)
//
// Established includes the half-closed cases (Shutdown sent, or the peer's
// disconnect received); Failed keeps the error until the socket is closed.
type State uint8

const (
	StateClosed      State = iota // created, no local port
	StateBound                    // has a local port
	StateListening                // accepts connect requests on its port
	StateConnecting               // connect request sent, no answer yet
	StateEstablished              // connected; data flows
	StateFailed                   // refused, reset or timed out; holds the error
	numStates
)

var stateNames = [numStates]string{"Closed", "Bound", "Listening", "Connecting", "Established", "Failed"}

func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// HasPort reports whether the endpoint owns or shares a local port.
func (s State) HasPort() bool { return s != StateClosed }

// IsConnection reports whether frames from a peer belong to the endpoint:
// it has a connection id the peer knows and a token.
func (s State) IsConnection() bool { return s == StateConnecting || s == StateEstablished }

// IsConnected reports whether data can flow.
func (s State) IsConnected() bool { return s == StateEstablished }

// HasPeer reports whether the endpoint has (or had) a peer address.
func (s State) HasPeer() bool {
	return s == StateConnecting || s == StateEstablished || s == StateFailed
}

// IsTerminal reports whether nothing but close can happen to the endpoint.
func (s State) IsTerminal() bool { return s == StateFailed }
