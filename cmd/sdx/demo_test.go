package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
)

func TestDemo(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	before := testutil.OwnNamespaces(t)
	// One queue, and three: frames go over every queue and each queue's
	// come back in order.
	for _, queues := range []int{1, 3} {
		if err := demo(context.Background(), demoConfig{frames: 5000, size: 64, queues: queues, timeout: 20 * time.Second}); err != nil {
			t.Fatalf("%d queues: %v", queues, err)
		}
	}
	// Jumbo frames of three UMEM frames each, and the largest.
	for _, mtu := range []int{9000, 65000} {
		if err := demo(context.Background(), demoConfig{frames: 2000, size: mtu - 28, queues: 1, mtu: mtu, timeout: 20 * time.Second}); err != nil {
			t.Fatalf("MTU %d: %v", mtu, err)
		}
	}
	if after := testutil.OwnNamespaces(t); after != before {
		t.Fatalf("namespaces left behind: before %q, after %q", before, after)
	}
}

func TestDemoStopsWhenCancelled(t *testing.T) {
	testutil.Privileged(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := testutil.OwnNamespaces(t)
	if err := demo(ctx, demoConfig{frames: 5000, size: 64, queues: 1, timeout: 20 * time.Second}); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("cancelled demo: %v", err)
	}
	if after := testutil.OwnNamespaces(t); after != before {
		t.Fatalf("namespaces left behind: before %q, after %q", before, after)
	}
}
