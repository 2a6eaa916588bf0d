package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
)

func TestDemo(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	before := namespaces(t)
	if err := demo(context.Background(), 5000, 64, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if after := namespaces(t); after != before {
		t.Fatalf("namespaces left behind: before %q, after %q", before, after)
	}
}

func TestDemoStopsWhenCancelled(t *testing.T) {
	testutil.Privileged(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := namespaces(t)
	if err := demo(ctx, 5000, 64, 20*time.Second); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("cancelled demo: %v", err)
	}
	if after := namespaces(t); after != before {
		t.Fatalf("namespaces left behind: before %q, after %q", before, after)
	}
}

func namespaces(t *testing.T) string {
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// Only this process's testbeds: other test binaries run alongside.
	mine := fmt.Sprintf("sdx-%d-", os.Getpid())
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), mine) {
			names = append(names, e.Name())
		}
	}
	return strings.Join(names, ",")
}
