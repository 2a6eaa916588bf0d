package sdx

import (
	"testing"
	"time"
)

// TestChanMutex checks the lock a Read or Write takes: free, it is taken
// whether or not the connection is closed (the caller looks at closing
// next); held, a waiter gives up when done closes and takes it when the
// holder lets go.
func TestChanMutex(t *testing.T) {
	m := newChanMutex()
	done := make(chan struct{})
	if !m.lockUnless(done) {
		t.Fatal("free lock not taken")
	}
	if m.tryLock() {
		t.Fatal("held lock taken again")
	}
	got := make(chan bool)
	go func() { got <- m.lockUnless(done) }()
	select {
	case <-got:
		t.Fatal("lockUnless returned while the lock was held")
	case <-time.After(20 * time.Millisecond):
	}
	m.unlock()
	if !<-got {
		t.Fatal("waiter did not take the lock its holder let go")
	}
	go func() { got <- m.lockUnless(done) }()
	close(done)
	if <-got {
		t.Fatal("waiter took a held lock after done closed")
	}
	m.unlock()
	if !m.lockUnless(done) {
		t.Fatal("free lock not taken after done closed")
	}
}

// BenchmarkChanMutex is the lock and unlock every Read and Write makes.
func BenchmarkChanMutex(b *testing.B) {
	m := newChanMutex()
	done := make(chan struct{})
	b.ReportAllocs()
	for b.Loop() {
		m.lockUnless(done)
		m.unlock()
	}
}
