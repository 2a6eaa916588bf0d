package provider

import "fmt"

// epState is where an endpoint (the engine's side of a socket) is in its
// life. Transitions, all made by the poller:
//
//	               Bind               Listen
//	Closed ─────────────> Bound ─────────────> Listening
//	  │                     │                      │ connect in, no cookie
//	  │ Connect             │ Connect              v
//	  │ (auto-bind)         │                  HalfOpen ── 5 accepts unanswered ──> (released)
//	  └─────────┐  ┌────────┘                      │
//	            v  v                               │ any valid frame from the connector
//	retry ┌─> Connecting ── reject ───> Failed     v (a connect with a valid cookie: at once)
//	(again│    │  │     ── time-out ─>   │     Established (child, in the backlog)
//	with  └────┘  │ accept, or a valid   │
//	cookie)       v frame of the acceptor│
//	         Established ── reset in ───> Failed (ECONNRESET)
//	              │      ── dead peer ──> Failed (ETIMEDOUT)
//	              │
//	  any state ──┴── hard close (CloseSocket): reset out, memory freed ──> (released)
//
// A connector's first moments in Established, until it hears from the
// acceptor after the accept, are "confirming" (endpoint.confirming): it
// still has its handshake part. Established includes the half-closed
// cases (Shutdown sent, or the peer's disconnect received); Failed keeps
// the error until the socket is closed.
type epState uint8

const (
	stateClosed      epState = iota // created, no local port
	stateBound                      // has a local port
	stateListening                  // accepts connect requests on its port
	stateConnecting                 // connect request sent, no answer yet
	stateHalfOpen                   // a listener's child: accept sent, the connector not yet heard again
	stateEstablished                // connected; data flows
	stateFailed                     // refused, reset or timed out; holds the error
	numStates
)

// stateNames are the states as ConnStats.State and sdx stat show them.
var stateNames = [numStates]string{"Closed", "Bound", "Listening", "Connecting", "HalfOpen", "Established", "Failed"}

func (s epState) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("epState(%d)", uint8(s))
}

// hasPort reports whether the endpoint owns or shares a local port.
func (s epState) hasPort() bool { return s != stateClosed }

// isConnection reports whether frames from a peer belong to the endpoint:
// it has a connection id the peer knows and a token.
func (s epState) isConnection() bool {
	return s == stateConnecting || s == stateHalfOpen || s == stateEstablished
}

// synchronized reports whether both ends have each other's ids and
// tokens: the endpoint acknowledges what it receives.
func (s epState) synchronized() bool { return s == stateHalfOpen || s == stateEstablished }

// hasPeer reports whether the endpoint has (or had) a peer address.
func (s epState) hasPeer() bool { return s >= stateConnecting }
