package wire

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
	"strconv"
	"testing"

	"github.com/sdx-project/sdx/internal/frame"
)

// The integrity checks a datagram could carry, side by side: CRC-32C (what
// the header carries), CRC-32 IEEE, and the Internet checksum that UDP
// would use (RFC 1071, summed eight bytes at a time). docs/PROTOCOL.md
// ("The integrity check") has the figures and the choice.

var integritySizes = []int{64, 1472, 8972}

var integritySink uint32

// internetSum is the ones' complement sum of b as 16-bit words.
func internetSum(b []byte) uint16 {
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	s += c // cannot carry again: c is 0 or 1 and s was just added into
	var tail [8]byte
	copy(tail[:], b)
	s, c = bits.Add64(s, binary.LittleEndian.Uint64(tail[:]), 0)
	s += c
	x := s>>32 + s&0xffffffff
	x = x>>32 + x&0xffffffff
	x = x>>16 + x&0xffff
	x = x>>16 + x&0xffff
	return bits.ReverseBytes16(uint16(x))
}

// TestInternetSum checks the fast sum against the plain one of RFC 1071
// (frame.Checksum, the IPv4 header's, complemented), so that the
// benchmark times a correct checksum.
func TestInternetSum(t *testing.T) {
	plain := func(b []byte) uint16 { return ^frame.Checksum(b) }
	b := make([]byte, 9001)
	for i := range b {
		b[i] = byte(i*131 + i>>8)
	}
	for n := range 200 {
		if got, want := internetSum(b[:n]), plain(b[:n]); got != want {
			t.Fatalf("%d bytes: %#04x, want %#04x", n, got, want)
		}
	}
	for _, n := range append(integritySizes, 9001, 1473) {
		for i := range b[:n] {
			b[i] = 0xff // the carries at their worst
		}
		if got, want := internetSum(b[:n]), plain(b[:n]); got != want {
			t.Fatalf("%d bytes of 0xff: %#04x, want %#04x", n, got, want)
		}
		for i := range b {
			b[i] = byte(i*131 + i>>8)
		}
		if got, want := internetSum(b[:n]), plain(b[:n]); got != want {
			t.Fatalf("%d bytes: %#04x, want %#04x", n, got, want)
		}
	}
}

func BenchmarkIntegrity(b *testing.B) {
	checks := []struct {
		name string
		fn   func([]byte) uint32
	}{
		{"crc32c", func(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }},
		{"crc32ieee", crc32.ChecksumIEEE},
		{"internet", func(p []byte) uint32 { return uint32(internetSum(p)) }},
	}
	for _, c := range checks {
		for _, n := range integritySizes {
			b.Run(c.name+"/"+strconv.Itoa(n), func(b *testing.B) {
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(i * 7)
				}
				b.SetBytes(int64(n))
				for b.Loop() {
					integritySink += c.fn(p)
				}
			})
		}
	}
}
