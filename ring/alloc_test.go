package ring

import "testing"

func TestNoAllocs(t *testing.T) {
	type big struct {
		p *int
		b [40]byte
	}
	s, _ := NewSPSC[big](64)
	q, _ := NewMPSC[big](64)
	var prodIdx, consIdx uint32
	p := NewProd(&prodIdx, &consIdx, 64)
	c := NewCons(&prodIdx, &consIdx, 64)
	x := new(int)
	v := big{p: x}

	cases := []struct {
		name string
		f    func()
	}{
		{"Prod/Cons", func() {
			_, n := p.Reserve(16)
			p.Submit(n)
			_, n = c.Peek(16)
			c.Release(n)
		}},
		{"SPSC Push/Pop", func() {
			s.Push(v)
			s.Pop()
		}},
		{"SPSC Reserve/Submit/Peek/Release", func() {
			idx, n := s.Reserve(16)
			for i := range uint32(n) {
				*s.At(idx + i) = v
			}
			s.Submit(n)
			_, n = s.Peek(16)
			s.Release(n)
		}},
		{"MPSC Push/Pop", func() {
			q.Push(v)
			q.Pop()
		}},
		{"MPSC Reserve/Submit/Peek/Release", func() {
			idx, n := q.Reserve(16)
			for i := range uint32(n) {
				*q.At(idx + i) = v
			}
			q.Submit(idx, n)
			_, n = q.Peek(16)
			q.Release(n)
		}},
	}
	for _, tc := range cases {
		if a := testing.AllocsPerRun(1000, tc.f); a != 0 {
			t.Errorf("%s: %v allocations per run", tc.name, a)
		}
	}
}
