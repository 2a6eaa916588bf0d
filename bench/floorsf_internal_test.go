package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// TestFloorStoreForward: xsk-floor-sf's server answers a message of three
// frames only once the third is in, then with all three; a message that
// lost a frame is dropped when the next begins; a one-frame message goes
// straight back.
func TestFloorStoreForward(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{Subnet: 67})
	if err := bed.Neighbours(); err != nil {
		t.Fatal(err)
	}
	sys, _ := Lookup("xsk-floor-sf")
	if err := sys.Open(&Hosts{A: bed.A, B: bed.B, ClientCPU: -1, ServerCPU: -1}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sys.Close(); err != nil {
			t.Error(err)
		}
	}()
	b := NewBound(context.Background(), 20*time.Second)
	defer b.Stop()
	c, s, err := sys.Pair(b)
	if err != nil {
		t.Fatal(err)
	}
	srv := make(chan error, 1)
	go func() { srv <- s.(Echoer).Echo() }()
	defer func() {
		b.Stop()
		if err := <-srv; err != nil && !errors.Is(err, ErrStopped) {
			t.Errorf("server: %v", err)
		}
		closeAll(c, s)
	}()
	const part = 1000
	msg := make([]byte, 3*part)
	queue := func(seq uint64, parts ...int) {
		t.Helper()
		for _, i := range parts {
			p := msg[i*part : (i+1)*part]
			binary.LittleEndian.PutUint64(p, seq)
			binary.LittleEndian.PutUint64(p[8:], uint64(len(msg)))
			if err := c.(Batcher).Queue(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.(Batcher).Flush(); err != nil {
			t.Fatal(err)
		}
	}
	dc := c.(DatagramConn)
	in := make([]byte, 2048)
	// recv returns the sequence number of the next frame back, or false
	// when none comes within wait.
	recv := func(wait time.Duration) (uint64, bool) {
		t.Helper()
		n, err := dc.RecvUntil(in, time.Now().Add(wait))
		if err == ErrTimeout {
			return 0, false
		}
		if err != nil || n != part {
			t.Fatalf("answer of %d bytes: %v", n, err)
		}
		return binary.LittleEndian.Uint64(in), true
	}
	queue(1, 0, 1)
	if seq, ok := recv(50 * time.Millisecond); ok {
		t.Fatalf("frame of message %d back before its message was whole", seq)
	}
	queue(1, 2)
	for range 3 {
		if seq, ok := recv(5 * time.Second); !ok || seq != 1 {
			t.Fatalf("answer to the whole message: %d, %v", seq, ok)
		}
	}
	// Message 2 loses its middle frame; message 3 comes whole.
	queue(2, 0, 2)
	queue(3, 0, 1, 2)
	for range 3 {
		if seq, ok := recv(5 * time.Second); !ok || seq != 3 {
			t.Fatalf("after a message that lost a frame: answer %d, %v; want 3", seq, ok)
		}
	}
	if seq, ok := recv(50 * time.Millisecond); ok {
		t.Fatalf("a frame of message %d came back too", seq)
	}
}
