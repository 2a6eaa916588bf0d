package xdp

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func TestPoolAccounting(t *testing.T) {
	p := newPool(64)
	rng := rand.New(rand.NewPCG(1, 2))
	var at [numPlaces][]uint32
	for range 100000 {
		switch rng.IntN(4) {
		case 0: // allocate
			to := Place(1 + rng.IntN(int(numPlaces)-1))
			if f, ok := p.Get(to); ok {
				at[to] = append(at[to], f)
			} else if p.Free() != 0 {
				t.Fatal("Get failed with free frames")
			}
		case 1, 2: // move
			from := Place(1 + rng.IntN(int(numPlaces)-1))
			to := Place(1 + rng.IntN(int(numPlaces)-1))
			if n := len(at[from]); n > 0 && from != to {
				f := at[from][n-1]
				at[from] = at[from][:n-1]
				p.Move(f, from, to)
				at[to] = append(at[to], f)
			}
		case 3: // free
			from := Place(1 + rng.IntN(int(numPlaces)-1))
			if n := len(at[from]); n > 0 {
				p.Put(at[from][n-1], from)
				at[from] = at[from][:n-1]
			}
		}
		if err := p.Check(); err != nil {
			t.Fatal(err)
		}
	}
	total := p.Free()
	for pl := PlaceFill; pl < numPlaces; pl++ {
		if p.Count(pl) != len(at[pl]) {
			t.Fatalf("%v: pool says %d, test holds %d", pl, p.Count(pl), len(at[pl]))
		}
		for _, f := range at[pl] {
			if p.PlaceOf(f) != pl {
				t.Fatalf("frame %d: %v, want %v", f, p.PlaceOf(f), pl)
			}
		}
		total += len(at[pl])
	}
	if total != 64 {
		t.Fatalf("frames add up to %d", total)
	}
}

func TestPoolExhaustion(t *testing.T) {
	p := newPool(4)
	for range 4 {
		if _, ok := p.Get(PlaceHeld); !ok {
			t.Fatal("Get failed early")
		}
	}
	if _, ok := p.Get(PlaceHeld); ok {
		t.Fatal("Get succeeded on an empty pool")
	}
	if n := p.reclaim(PlaceHeld); n != 4 || p.Free() != 4 {
		t.Fatalf("reclaim: %d, free %d", n, p.Free())
	}
}

func TestPoolCheckCatchesCorruption(t *testing.T) {
	p := newPool(8)
	f, _ := p.Get(PlaceHeld)
	p.place[f] = PlaceTx // a frame recorded in the wrong place
	if err := p.Check(); err == nil {
		t.Fatal("Check missed a frame in the wrong place")
	}
	p = newPool(8)
	p.free = append(p.free, p.free[0]) // one frame free twice
	if err := p.Check(); err == nil {
		t.Fatal("Check missed a frame free twice")
	}
}

func TestPoolDebugCatchesDoubleRelease(t *testing.T) {
	if !debug {
		t.Skip("per-transition checks need -tags sdxdebug")
	}
	p := newPool(8)
	f, _ := p.Get(PlaceHeld)
	p.Put(f, PlaceHeld)
	defer func() {
		if recover() == nil {
			t.Fatal("releasing a free frame did not panic in the debug build")
		}
	}()
	p.Put(f, PlaceHeld)
}

func TestPoolAllocs(t *testing.T) {
	p := newPool(64)
	n := testing.AllocsPerRun(1000, func() {
		f, _ := p.Get(PlaceHeld)
		p.Move(f, PlaceHeld, PlaceTx)
		p.Put(f, PlaceTx)
	})
	if n != 0 {
		t.Fatalf("%v allocs per frame round trip", n)
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
	}{
		{"no interface", func(c *Config) { c.Interface = "" }},
		{"frame size", func(c *Config) { c.FrameSize = 3000 }},
		{"frames not pow2", func(c *Config) { c.NumFrames = 1000 }},
		{"ring not pow2", func(c *Config) { c.RxSize = 100 }},
		{"too few frames", func(c *Config) { c.NumFrames = 64; c.FillSize = 128 }},
		{"negative queue", func(c *Config) { c.Queue = -1 }},
	}
	for _, c := range cases {
		cfg := Config{Interface: "eth0"}
		c.mod(&cfg)
		cfg.setDefaults()
		if err := cfg.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", c.name, err)
		}
	}
	cfg := Config{Interface: "eth0"}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if _, err := Open(Config{Interface: "eth0", FrameSize: 1000}); !errors.Is(err, ErrConfig) {
		t.Fatalf("Open with a bad config: %v", err)
	}
}
