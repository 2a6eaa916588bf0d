package provider

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

// Connect cookies let a listener under a connect flood keep no state for a
// connect request until its sender has shown that it receives frames at its
// address: the listener answers with a retry carrying a cookie, and only a
// connect that echoes a valid cookie creates a connection (the scheme of
// QUIC's Retry and TCP's SYN cookies).
//
// The cookie is a MAC, under a key drawn when the engine starts, of the
// connect's source address, ports, connection id and token and of the
// current epoch. A cookie is valid in the epoch it was made and the next,
// so for between one and two epochs.
const (
	cookieEpochShift = 31 // an epoch is 2^31 ns, about 2.1 s
	// maxAcceptTries is how many times a half-open connection sends its
	// accept before it is dropped: with the 20 ms initial RTO doubling,
	// 20+40+80+160+320 ms.
	maxAcceptTries = 5
)

// cookieMAC computes cookies with AES-128 as a CBC-MAC over two blocks:
// fixed-length input, so CBC-MAC is a PRF. It allocates nothing.
type cookieMAC struct {
	block   cipher.Block
	in, out [aes.BlockSize]byte
}

func newCookieMAC(key [16]byte) *cookieMAC {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	return &cookieMAC{block: b}
}

// make returns the cookie for a connect request from peer in epoch. It is
// never 0: a connect with seq 0 carries no cookie.
func (m *cookieMAC) make(peer netip.Addr, h *wire.Header, epoch int64) uint64 {
	a := peer.As4()
	copy(m.in[0:4], a[:])
	binary.BigEndian.PutUint16(m.in[4:], h.SrcPort)
	binary.BigEndian.PutUint16(m.in[6:], h.DstPort)
	binary.BigEndian.PutUint32(m.in[8:], h.SrcConn)
	binary.BigEndian.PutUint32(m.in[12:], uint32(epoch))
	m.block.Encrypt(m.out[:], m.in[:])
	binary.BigEndian.PutUint64(m.in[0:], binary.BigEndian.Uint64(m.out[0:])^h.Token)
	binary.BigEndian.PutUint64(m.in[8:], binary.BigEndian.Uint64(m.out[8:]))
	m.block.Encrypt(m.out[:], m.in[:])
	return binary.BigEndian.Uint64(m.out[:]) | 1
}

// check reports whether h carries the cookie of the current or the
// previous epoch.
func (m *cookieMAC) check(peer netip.Addr, h *wire.Header, now int64) bool {
	epoch := now >> cookieEpochShift
	return h.Seq == m.make(peer, h, epoch) || h.Seq == m.make(peer, h, epoch-1)
}

// cookie returns the cookie for a connect request from peer now.
func (m *cookieMAC) cookie(peer netip.Addr, h *wire.Header, now int64) uint64 {
	return m.make(peer, h, now>>cookieEpochShift)
}
