package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A torn tail is cut at start; committed ids are answered as duplicates with
// the digest committed first, and a copy in the same batch is written once.
func TestLedgerReopenAndDuplicates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.txt")
	d1 := transform([]byte("one"), 1)
	line1 := "op-1 " + string(func() []byte { h := hexDigest(d1[:]); return h[:] }()) + "\n"
	if err := os.WriteFile(path, []byte(line1+"op-2 abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := openLedger(path, 16, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != line1 {
		t.Fatalf("torn tail not cut: %q", data)
	}
	st := newStage(16, nil)
	s := &session{st: st, wake: make(chan struct{}, 1)}
	for range 4 {
		st.permits <- struct{}{}
		s.outstanding.Add(1)
	}
	d2 := transform([]byte("two"), 1)
	other := transform([]byte("other"), 1)
	l.batch = append(l.batch,
		commitReq{id: "op-1", digest: other, to: s}, // committed before: duplicate, first digest
		commitReq{id: "op-2", digest: d2, to: s},    // new
		commitReq{id: "op-2", digest: other, to: s}, // copy in the same batch
		commitReq{id: "op-3", digest: d2, to: s})    // new
	l.commit() // what the committer goroutine does with a batch
	if err := l.file.Close(); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id  string
		d   [32]byte
		dup bool
	}{{"op-1", d1, true}, {"op-2", d2, false}, {"op-2", d2, true}, {"op-3", d2, false}}
	if len(s.acks) != len(want) {
		t.Fatalf("%d acks, want %d", len(s.acks), len(want))
	}
	for i, w := range want {
		a := s.acks[i]
		if a.Id != w.id || string(a.Digest) != string(w.d[:]) || a.Duplicate != w.dup {
			t.Errorf("ack %d = %v, want %s dup=%v", i, a, w.id, w.dup)
		}
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "\n"); n != 3 {
		t.Errorf("ledger has %d lines, want 3:\n%s", n, data)
	}
	reopened, err := openLedger(path, 16, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.file.Close()
	if len(reopened.committed) != 3 || reopened.committed["op-2"] != d2 {
		t.Errorf("reloaded %d ids", len(reopened.committed))
	}
}
