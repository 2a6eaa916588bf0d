package testbed_test

import (
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// txPackets returns the frames the hop's port has sent towards its host.
func txPackets(t *testing.T, h *testbed.Hop, port *testbed.Host) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "-n", h.R, "-s", "-j", "link", "show", "dev", port.If).Output()
	if err != nil {
		t.Fatalf("link stats of %s: %v", port.If, err)
	}
	var links []struct {
		Stats64 struct {
			TX struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("link stats of %s: %v: %s", port.If, err, out)
	}
	return links[0].Stats64.TX.Packets
}

func TestHopUpAndDown(t *testing.T) {
	testutil.Privileged(t)
	h, err := testbed.CreateHop(testbed.HopOptions{Subnet: 9, Third: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, e := range []*testbed.Host{&h.A, &h.B, &h.C} {
		if !h.Prefix.Contains(e.Addr) || !netip.MustParsePrefix("198.18.0.0/15").Contains(e.Addr) {
			t.Fatalf("%s: address %v outside %v and 198.18.0.0/15", e.NS, e.Addr, h.Prefix)
		}
		if e.Index == 0 || len(e.MAC) != 6 {
			t.Fatalf("interface facts not filled in: %+v", e)
		}
	}
	for _, to := range []netip.Addr{h.B.Addr, h.C.Addr} {
		out, err := exec.Command("ip", "netns", "exec", h.A.NS, "ping", "-c1", "-W2", to.String()).CombinedOutput()
		if err != nil {
			t.Fatalf("ping %v across the hop: %v\n%s", to, err, out)
		}
	}

	// Learning on: unicast from A to B does not reach C. As a hub: it does.
	send := func(n int) {
		t.Helper()
		if err := sys.InNetns(h.A.NS, func() error {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			defer c.Close()
			for range n {
				// Unconnected: B's ICMP port unreachable does not fail
				// the next write.
				if _, err := c.WriteToUDPAddrPort([]byte("to B"), netip.AddrPortFrom(h.B.Addr, 9)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 50
	before := txPackets(t, h, &h.RC)
	send(n)
	if got := txPackets(t, h, &h.RC) - before; got >= n {
		t.Errorf("learning bridge: %d frames of %d from A to B reached C", got, n)
	}
	if err := h.SetHub(true); err != nil {
		t.Fatal(err)
	}
	before = txPackets(t, h, &h.RC)
	send(n)
	if got := txPackets(t, h, &h.RC) - before; got < n {
		t.Errorf("hub: %d frames of %d from A to B reached C", got, n)
	}
	if err := h.SetHub(false); err != nil {
		t.Fatal(err)
	}

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{h.A.NS, h.B.NS, h.C.NS, h.R} {
		if sys.NetnsExists(ns) {
			t.Fatalf("namespace %s left behind", ns)
		}
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
