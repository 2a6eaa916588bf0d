package xdp

// Packets of several frames (multi-buffer, Queue.MultiBuffer): a packet
// longer than a UMEM frame is a chain of descriptors, all but the last
// marked PktContd. These helpers build and read such chains; a packet of
// one frame is a chain of one.

// AllocPacket takes the frames for a packet of n bytes and appends their
// descriptors to descs, chained and with their lengths set: every frame
// full but the last. It reports false, taking nothing, when the pool has
// too few free frames. Write the packet's bytes with WritePacket, then
// Transmit the chain whole.
func (q *Queue) AllocPacket(descs []Desc, n int) ([]Desc, bool) {
	fs := q.cfg.FrameSize
	nf := max((n+fs-1)/fs, 1)
	if q.pool.Free() < nf {
		return descs, false
	}
	for i := range nf {
		f, _ := q.pool.Get(PlaceHeld)
		d := Desc{Addr: q.Addr(f), Len: uint32(min(n-i*fs, fs)), Options: PktContd}
		if i == nf-1 {
			d.Options = 0
		}
		descs = append(descs, d)
	}
	return descs, true
}

// WritePacket copies p into the chain from byte off of the packet on and
// returns how many bytes it copied (fewer when the chain ends first).
func (q *Queue) WritePacket(chain []Desc, off int, p []byte) int {
	n := 0
	for _, d := range chain {
		b := q.Data(d)
		if off >= len(b) {
			off -= len(b)
			continue
		}
		k := copy(b[off:], p[n:])
		n, off = n+k, 0
		if n == len(p) {
			break
		}
	}
	return n
}

// Chain returns the length of the chain that begins descs, in descriptors
// and in bytes; a chain that descs cuts short ends with descs.
func Chain(descs []Desc) (k, n int) {
	for i, d := range descs {
		n += int(d.Len)
		if d.Options&PktContd == 0 {
			return i + 1, n
		}
	}
	return len(descs), n
}

// ReadPacket copies the packet whose chain begins descs into dst, as much
// as fits, and returns the bytes copied and the descriptors the chain
// takes.
func (q *Queue) ReadPacket(dst []byte, descs []Desc) (n, k int) {
	for i, d := range descs {
		n += copy(dst[n:], q.Data(d))
		if d.Options&PktContd == 0 {
			return n, i + 1
		}
	}
	return n, len(descs)
}

// ReleasePacket returns the frames of a chain to the pool.
func (q *Queue) ReleasePacket(chain []Desc) {
	for _, d := range chain {
		q.Release(q.FrameOf(d))
	}
}

// Lent returns the lent frames (Config.LentFrames), frame after frame: the
// owner's to build packets in. The slice stays valid after Close.
func (q *Queue) Lent() []byte {
	return q.umem[q.cfg.NumFrames*q.cfg.FrameSize:]
}

// LentPacket appends to descs the chain of a packet of n bytes built in
// the lent frames from byte off of Lent on, which must begin a frame; the
// packet takes as many frames as it needs, one after the other. Transmit
// the chain whole; each frame, once sent, is reported to the function
// set with SetLentDone. Packets of several frames need MultiBuffer.
func (q *Queue) LentPacket(descs []Desc, off, n int) []Desc {
	fs := q.cfg.FrameSize
	base := uint64(q.cfg.NumFrames*fs + off)
	nf := max((n+fs-1)/fs, 1)
	for i := range nf {
		d := Desc{Addr: base + uint64(i*fs), Len: uint32(min(n-i*fs, fs)), Options: PktContd}
		if i == nf-1 {
			d.Options = 0
		}
		descs = append(descs, d)
	}
	return descs
}

// SetLentDone sets the function Complete calls with the index (within
// Lent) of each lent frame the kernel has sent.
func (q *Queue) SetLentDone(fn func(frame uint32)) { q.lentDone = fn }
