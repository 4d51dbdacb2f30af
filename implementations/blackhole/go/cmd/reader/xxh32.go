package main

import (
	"encoding/binary"
	"math/bits"
)

// xxh32 is a streaming xxHash32 (seed 0), for the LZ4 frame checksums.
const (
	p1 uint32 = 2654435761
	p2 uint32 = 2246822519
	p3 uint32 = 3266489917
	p4 uint32 = 668265263
	p5 uint32 = 374761393
)

type xxh32 struct {
	v     [4]uint32
	buf   [16]byte
	nbuf  int
	total uint64
}

func (x *xxh32) reset() {
	var seed uint32 // 0; a variable so that the sums wrap
	x.v = [4]uint32{seed + p1 + p2, seed + p2, seed, seed - p1}
	x.nbuf = 0
	x.total = 0
}

func round(v, lane uint32) uint32 {
	return bits.RotateLeft32(v+lane*p2, 13) * p1
}

func (x *xxh32) stripe(b []byte) {
	x.v[0] = round(x.v[0], binary.LittleEndian.Uint32(b[0:]))
	x.v[1] = round(x.v[1], binary.LittleEndian.Uint32(b[4:]))
	x.v[2] = round(x.v[2], binary.LittleEndian.Uint32(b[8:]))
	x.v[3] = round(x.v[3], binary.LittleEndian.Uint32(b[12:]))
}

func (x *xxh32) write(b []byte) {
	x.total += uint64(len(b))
	if x.nbuf > 0 {
		n := copy(x.buf[x.nbuf:], b)
		x.nbuf += n
		b = b[n:]
		if x.nbuf < 16 {
			return
		}
		x.stripe(x.buf[:])
		x.nbuf = 0
	}
	for len(b) >= 16 {
		x.stripe(b)
		b = b[16:]
	}
	x.nbuf = copy(x.buf[:], b)
}

func (x *xxh32) sum() uint32 {
	var h uint32
	if x.total >= 16 {
		h = bits.RotateLeft32(x.v[0], 1) + bits.RotateLeft32(x.v[1], 7) +
			bits.RotateLeft32(x.v[2], 12) + bits.RotateLeft32(x.v[3], 18)
	} else {
		h = p5 // seed 0 + p5
	}
	h += uint32(x.total)
	b := x.buf[:x.nbuf]
	for len(b) >= 4 {
		h += binary.LittleEndian.Uint32(b) * p3
		h = bits.RotateLeft32(h, 17) * p4
		b = b[4:]
	}
	for _, c := range b {
		h += uint32(c) * p5
		h = bits.RotateLeft32(h, 11) * p1
	}
	h ^= h >> 15
	h *= p2
	h ^= h >> 13
	h *= p3
	h ^= h >> 16
	return h
}

func xxh32Sum(b []byte) uint32 {
	var x xxh32
	x.reset()
	x.write(b)
	return x.sum()
}
