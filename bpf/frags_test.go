package bpf

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sdx-project/sdx/internal/testutil"
)

// The programs are frags-aware: their sections say so, and a jumbo sdx
// frame, which BPF_PROG_TEST_RUN hands over in several buffers as a driver
// would, is an sdx frame to both programs, judged on the whole frame's
// length. Measured against data_end alone its IP length would run past
// the first buffer, and it would be malformed.
func TestFragsAware(t *testing.T) {
	testutil.Privileged(t)
	for name, spec := range map[string]func() (*ebpf.CollectionSpec, error){"steer": loadSteer, "fault": loadFault} {
		cs, err := spec()
		if err != nil {
			t.Fatal(err)
		}
		for pname, p := range cs.Programs {
			if p.SectionName != "xdp.frags" && p.SectionName != "xdp" {
				t.Errorf("%s: %s in section %q", name, pname, p.SectionName)
			}
		}
		if p := cs.Programs["sdx_"+name]; p == nil || p.SectionName != "xdp.frags" {
			t.Errorf("%s: sdx_%s is not in section xdp.frags", name, name)
		}
		if p := cs.Programs["sdx_"+name+"_plain"]; p == nil || p.SectionName != "xdp" {
			t.Errorf("%s: no plain sdx_%s_plain in section xdp", name, name)
		}
	}

	s := mustLoad(t, testPort)
	if err := s.FragsErr(); err != nil {
		t.Fatalf("frags-aware steer not loaded on this kernel: %v", err)
	}
	if ps := s.Programs(); len(ps) != 2 || !s.IsFrags(ps[0]) || s.IsFrags(ps[1]) {
		t.Fatalf("programs %v: want the frags-aware one, then the plain one", ps)
	}
	jumbo := frame{dport: testPort, payload: 9000 - 20 - 8}.bytes()
	expect(t, s, "9000-byte sdx frame in several buffers", jumbo, nosocket)
	bad := frame{dport: testPort, payload: 9000 - 20 - 8, totLen: 9000 + 1}.bytes()
	expect(t, s, "IP length beyond the whole frame", bad, malformed)

	f := mustLoadFault(t)
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1})
	verdict, err := f.Program().Run(&ebpf.RunOptions{Data: jumbo, Repeat: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Stats(); verdict != xdpDrop || st.Eligible != 1 {
		t.Fatalf("fault on a jumbo sdx frame: verdict %d, %+v; want dropped as eligible", verdict, st)
	}
}

// A kernel without frags-aware programs (before 5.18) gets the plain
// programs, which judge frames exactly as before, and the reason is kept.
func TestFragsFallback(t *testing.T) {
	testutil.Privileged(t)
	loadFrags = false
	defer func() { loadFrags = true }()

	s := mustLoad(t, testPort)
	var kfe *KernelFeatureError
	if err := s.FragsErr(); !errors.As(err, &kfe) || kfe.Minimum != MinKernelFrags || !errors.Is(err, errLoadFrags) {
		t.Fatalf("FragsErr %v: want a KernelFeatureError naming Linux %s", err, MinKernelFrags)
	}
	ps := s.Programs()
	if len(ps) != 1 || s.IsFrags(ps[0]) || s.Program() != ps[0] {
		t.Fatalf("programs %v: want the plain one alone", ps)
	}
	expect(t, s, "sdx frame", frame{dport: testPort, payload: 1400}.bytes(), nosocket)
	expect(t, s, "other port", frame{dport: testPort + 1, payload: 16}.bytes(), passed)
	expect(t, s, "IP length beyond the frame", frame{dport: testPort, payload: 16, totLen: 200}.bytes(), malformed)

	f, err := LoadFault()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.FragsErr(); !errors.As(err, &kfe) || kfe.Minimum != MinKernelFrags {
		t.Fatalf("fault FragsErr %v", err)
	}
	configure(t, f, FaultConfig{Port: testPort, DropRate: 1})
	if verdict, err := f.Program().Run(&ebpf.RunOptions{Data: frame{dport: testPort, payload: 16}.bytes(), Repeat: 1}); err != nil || verdict != xdpDrop {
		t.Fatalf("plain fault: verdict %d, %v; want dropped", verdict, err)
	}
}
