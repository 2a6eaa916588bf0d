package xdp_test

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/xdp"
)

// A second socket on a queue that a live socket holds fails with an
// error that says so, and still matches EBUSY.
func TestOpenQueueHeld(t *testing.T) {
	bed, _ := queueOnA(t)
	q2, err := xdp.Open(xdp.Config{Netns: bed.A.NS, Interface: bed.A.If})
	if err == nil {
		q2.Close()
		t.Fatal("a second socket on a held queue opened")
	}
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "another sdx stack") {
		t.Fatalf("second Open: %v, want EBUSY saying another stack holds the queue", err)
	}
}
