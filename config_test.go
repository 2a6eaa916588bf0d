package sdx

import (
	"errors"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/memnet"
)

// NewStack refuses absurd sizes and durations with an error that names
// the field, before anything is attached or allocated (issue 13, item 7).
func TestNewStackAbsurdValues(t *testing.T) {
	n := memnet.New(1)
	cases := []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"CloseTimeout never", func(c *Config) { c.CloseTimeout = math.MaxInt64 }, "Config.CloseTimeout"},
	}
	for _, c := range cases {
		l, err := n.NewLink()
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Link: l, Prefix: memnet.Prefix, Provider: provider.Config{MaxSockets: 16, Buffers: 2048, Timeout: 5 * time.Second}}
		c.set(&cfg)
		st, err := NewStack(cfg)
		if err == nil {
			st.Close()
			t.Errorf("%s: NewStack accepted it", c.name)
			continue
		}
		l.Close()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an ErrConfig naming %s", c.name, err, c.want)
		}
	}
	// A provider field is the provider's error.
	l, _ := n.NewLink()
	_, err := NewStack(Config{Link: l, Prefix: memnet.Prefix, Provider: provider.Config{Timeout: math.MaxInt64}})
	if !errors.Is(err, provider.ErrConfig) || !strings.Contains(err.Error(), "Config.Timeout") {
		t.Errorf("Provider.Timeout never: %v", err)
	}
}

// A second stack on an interface and queue that a stack already holds
// says that another stack holds it, and still matches EBUSY.
func TestNewStackQueueHeld(t *testing.T) {
	testutil.CheckGoroutines(t)
	bed := vethBed(t)
	vethStack(t, &bed.A)
	st, err := NewStack(Config{Netns: bed.A.NS, Interface: bed.A.If, Provider: provider.Config{MaxSockets: 16, Buffers: 2048}})
	if err == nil {
		st.Close()
		t.Fatal("a second stack on a held queue started")
	}
	if !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), "another sdx stack") {
		t.Fatalf("second stack: %v, want EBUSY saying another stack holds the queue", err)
	}
}
