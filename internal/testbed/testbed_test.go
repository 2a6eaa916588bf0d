package testbed_test

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

func TestBedUpAndDown(t *testing.T) {
	testutil.Privileged(t)
	b, err := testbed.Create(testbed.Options{Subnet: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Prefix.Contains(b.A.Addr) || !b.Prefix.Contains(b.B.Addr) || b.A.Addr.As4()[0] != 198 || b.A.Addr.As4()[1] != 18 {
		t.Fatalf("addresses %v %v outside 198.18.0.0/15", b.A.Addr, b.B.Addr)
	}
	if b.A.Index == 0 || len(b.B.MAC) != 6 {
		t.Fatalf("interface facts not filled in: %+v", b.A)
	}
	out, err := exec.Command("ip", "netns", "exec", b.A.NS, "ping", "-c1", "-W2", b.B.Addr.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping across the testbed: %v\n%s", err, out)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if sys.NetnsExists(b.A.NS) || sys.NetnsExists(b.B.NS) {
		t.Fatal("namespaces left behind")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSweepRemovesOnlyDeadOwners(t *testing.T) {
	testutil.Privileged(t)
	// A PID with no process: the highest free one.
	pid := 4194303
	for ; pid > 1; pid-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			break
		}
	}
	dead := fmt.Sprintf("sdx-%d-1-a", pid)
	live := fmt.Sprintf("sdx-%d-sweep-a", os.Getpid())
	for _, ns := range []string{dead, live} {
		if err := testbed.IP("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	defer testbed.IP("netns", "del", live)
	defer func() {
		if sys.NetnsExists(dead) {
			testbed.IP("netns", "del", dead)
		}
	}()
	testbed.Sweep()
	if sys.NetnsExists(dead) {
		t.Fatal("Sweep left the namespace of a process that is gone")
	}
	if !sys.NetnsExists(live) {
		t.Fatal("Sweep removed the namespace of a live process")
	}
}
