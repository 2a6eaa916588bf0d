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
		if err := demo(context.Background(), 5000, 64, queues, 20*time.Second); err != nil {
			t.Fatalf("%d queues: %v", queues, err)
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
	if err := demo(ctx, 5000, 64, 1, 20*time.Second); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("cancelled demo: %v", err)
	}
	if after := testutil.OwnNamespaces(t); after != before {
		t.Fatalf("namespaces left behind: before %q, after %q", before, after)
	}
}
