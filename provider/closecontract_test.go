package provider

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/sdx-project/sdx/internal/testutil"
)

// Tests of the close contract's finer points (docs/CLOSE.md, points 2
// and 3): what a closed descriptor answers, Duplicate racing the last
// close, and which close cancels the operations posted through a
// descriptor.

// A closed (or never issued) descriptor fails with ENOTSOCK before any
// argument is looked at: the descriptor is the first argument checked.
func TestCloseNotSockBeforeArguments(t *testing.T) {
	testutil.CheckGoroutines(t)
	tn := newTestNet(t, 31, Faults{}, 2, nil)
	p := tn.ps[0]
	old := must[Socket](t)(p.Socket())
	if err := p.CloseSocket(old); err != nil {
		t.Fatal(err)
	}
	cq := must[*CompletionQueue](t)(p.NewCompletionQueue(8, nil))
	foreign := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 9, 9}), 80) // not the link's; nothing is sent
	for _, s := range []Socket{old, 0, Socket(1<<32 | 9999)} {
		uses := map[string]func() error{
			"Bind foreign address":     func() error { return p.Bind(s, foreign) },
			"Recv empty buffer":        func() error { _, err := p.Recv(s, nil); return err },
			"PostRecv empty buffer":    func() error { return p.PostRecv(s, nil, cq, 0) },
			"PostSend nil queue":       func() error { return p.PostSend(s, []byte("x"), nil, 0) },
			"PostRecv nil queue":       func() error { return p.PostRecv(s, make([]byte, 1), nil, 0) },
			"PostAccept nil queue":     func() error { return p.PostAccept(s, nil, 0) },
			"PostConnect nil queue":    func() error { return p.PostConnect(s, tn.addr(1, 80), nil, 0) },
			"EventSelect nil function": func() error { return p.EventSelect(s, FDRead, nil) },
		}
		for name, use := range uses {
			if err := use(); !errors.Is(err, ErrNotSock) {
				t.Errorf("%s on %v: %v, want ENOTSOCK", name, s, err)
			}
		}
	}
	// On a live descriptor the same arguments are still refused.
	live := must[Socket](t)(p.Socket())
	checks := map[string]struct {
		err  error
		want error
	}{
		"Bind foreign address":     {p.Bind(live, foreign), ErrAddrNotAvail},
		"Recv empty buffer":        {second(p.Recv(live, nil)), ErrInvalid},
		"PostRecv empty buffer":    {p.PostRecv(live, nil, cq, 0), ErrInvalid},
		"PostSend nil queue":       {p.PostSend(live, []byte("x"), nil, 0), ErrInvalid},
		"EventSelect nil function": {p.EventSelect(live, FDRead, nil), ErrInvalid},
	}
	for name, c := range checks {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s on a live descriptor: %v, want %v", name, c.err, c.want)
		}
	}
	if st := p.Stats(); st.OpsInUse != 0 {
		t.Errorf("%d ops in use after refused verbs", st.OpsInUse)
	}
}
