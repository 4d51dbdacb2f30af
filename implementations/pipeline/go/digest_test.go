package main

import (
	"encoding/hex"
	"strings"
	"testing"
)

// The contract's test vectors (scenarios/pipeline/README.md), ROUNDS = 100.
func TestDigestVectors(t *testing.T) {
	for _, v := range []struct{ id, payload, dA, dB, dC string }{
		{"op-1", "hello pipeline", "5e95cebd", "d29081ab", "b557c49333ea56a32d7a54d1f2d05266a69da513c03344397489a899cfc2f89d"},
		{"op-empty", "", "", "", "55ff76d47192d3e6bfc7c6f63fe36278d8957943838b1f99395f05b0eb41adeb"},
	} {
		dA := entryDigest(v.id, []byte(v.payload), 100)
		dB := transform(dA[:], 100)
		dC := transform(dB[:], 100)
		if got := hex.EncodeToString(dA[:]); !strings.HasPrefix(got, v.dA) {
			t.Errorf("%s: dA = %s, want %s...", v.id, got, v.dA)
		}
		if got := hex.EncodeToString(dB[:]); !strings.HasPrefix(got, v.dB) {
			t.Errorf("%s: dB = %s, want %s...", v.id, got, v.dB)
		}
		if got := hexDigest(dC[:]); string(got[:]) != v.dC {
			t.Errorf("%s: dC = %s, want %s", v.id, got, v.dC)
		}
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"op-1": true, "A.b_c:d-9": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "bad id": false, "a/b": false, "é": false,
	} {
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
}
