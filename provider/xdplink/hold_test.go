package xdplink

import (
	"errors"
	"testing"

	"github.com/sdx-project/sdx/xdp"
)

// TestHoldFrames: Config.HoldFrames for a queue, its default half of
// what the fill ring leaves, refused above all of that.
func TestHoldFrames(t *testing.T) {
	for _, c := range []struct {
		n, frames, fill, want int
		bad                   bool
	}{
		{0, 4096, 2048, 1024, false},
		{0, 8192, 2048, 3072, false},
		{0, 2048, 2048, 0, false},
		{-1, 4096, 2048, 0, false},
		{24, 4096, 2048, 24, false},
		{2048, 4096, 2048, 2048, false},
		{2049, 4096, 2048, 0, true},
	} {
		got, err := holdFrames(c.n, xdp.Config{NumFrames: c.frames, FillSize: c.fill})
		if got != c.want || (err != nil) != c.bad || c.bad && !errors.Is(err, ErrConfig) {
			t.Errorf("holdFrames(%d) of %d frames, fill %d: %d, %v; want %d", c.n, c.frames, c.fill, got, err, c.want)
		}
	}
}
