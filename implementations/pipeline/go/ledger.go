package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	pb "langbench/pipeline/pipelinepb"
)

// commitReq asks the ledger to commit one operation and to acknowledge it
// on the session it came in on.
type commitReq struct {
	id     string
	digest [sha256.Size]byte // dC
	to     *session
}

// ledger is the append-only ledger of node c with its single committer
// goroutine: it owns the set of committed ids and does group commit (every
// request queued while the previous batch was being synced goes into the
// next batch: their lines are written with one write and made durable with
// one fdatasync, then all of them are acknowledged).
type ledger struct {
	path      string
	file      *os.File
	fd        int
	committed map[string][sha256.Size]byte
	in        chan commitReq
	quit      chan struct{}
	done      chan struct{}
	log       *slog.Logger

	buf     []byte
	batch   []commitReq
	acks    []*pb.Ack
	batches int64 // syncs done (logged at the end)
	lines   int64
}

// openLedger loads the committed ids, cuts a torn tail (a last line without
// its newline, left by a crash) and opens the file for appending. queue is
// the capacity of the request channel (the node's in-flight limit, so a
// submitter never waits for room).
func openLedger(path string, queue int, log *slog.Logger) (*ledger, error) {
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	committed, valid, dups, err := parseLedger(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if valid < len(data) {
		log.Warn("cutting a torn tail off the ledger", "bytes", len(data)-valid)
		if err := f.Truncate(int64(valid)); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if created {
		// make the new file's directory entry durable too
		if dir, err := os.Open(filepath.Dir(path)); err == nil {
			dir.Sync()
			dir.Close()
		}
	}
	if dups > 0 {
		log.Warn("ledger holds ids on more than one line; the first line wins", "lines", dups)
	}
	log.Info("ledger open", "path", path, "committed", len(committed), "created", created)
	return &ledger{
		path:      path,
		file:      f,
		fd:        int(f.Fd()),
		committed: committed,
		in:        make(chan commitReq, queue),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		log:       log,
		buf:       make([]byte, 0, 64<<10),
	}, nil
}

// parseLedger reads "{id} {64 hex}\n" lines; valid is the length of the
// part made of whole lines (what follows is a torn tail).
func parseLedger(data []byte) (committed map[string][sha256.Size]byte, valid, dups int, err error) {
	committed = make(map[string][sha256.Size]byte, bytes.Count(data, newline)+1024)
	for line := 1; ; line++ {
		nl := bytes.IndexByte(data[valid:], '\n')
		if nl < 0 {
			return committed, valid, dups, nil
		}
		rec := data[valid : valid+nl]
		sp := bytes.IndexByte(rec, ' ')
		var d [sha256.Size]byte
		if sp < 0 || !validID(string(rec[:sp])) || len(rec)-sp-1 != 2*sha256.Size {
			return nil, 0, 0, fmt.Errorf("line %d is not '{id} {digest}'", line)
		}
		if _, err := hex.Decode(d[:], rec[sp+1:]); err != nil {
			return nil, 0, 0, fmt.Errorf("line %d: %w", line, err)
		}
		id := string(rec[:sp])
		if _, seen := committed[id]; seen {
			dups++
		} else {
			committed[id] = d
		}
		valid += nl + 1
	}
}

// submit queues a request for the committer.
func (l *ledger) submit(r commitReq) { l.in <- r }

// run is the committer goroutine.
func (l *ledger) run() {
	defer close(l.done)
	for {
		stopping := false
		select {
		case r := <-l.in:
			l.batch = append(l.batch, r)
		case <-l.quit:
			stopping = true
		}
	fill:
		for {
			select {
			case r := <-l.in:
				l.batch = append(l.batch, r)
			default:
				break fill
			}
		}
		if len(l.batch) > 0 {
			l.commit()
		}
		if stopping {
			return
		}
	}
}

// commit writes the batch's new lines, syncs them, then acknowledges every
// request of the batch (a copy of an id committed in this same batch is
// acknowledged as a duplicate, after the sync).
func (l *ledger) commit() {
	l.buf = l.buf[:0]
	digests := make([]byte, sha256.Size*len(l.batch)) // one allocation for the batch's acks
	for i := range l.batch {
		r := &l.batch[i]
		d, dup := l.committed[r.id]
		if !dup {
			d = r.digest
			l.committed[r.id] = d
			l.buf = append(l.buf, r.id...)
			l.buf = append(l.buf, ' ')
			l.buf = hex.AppendEncode(l.buf, d[:])
			l.buf = append(l.buf, '\n')
			l.lines++
		}
		digest := digests[i*sha256.Size : (i+1)*sha256.Size : (i+1)*sha256.Size]
		copy(digest, d[:])
		l.acks = append(l.acks, &pb.Ack{Id: r.id, Digest: digest, Duplicate: dup})
	}
	if len(l.buf) > 0 {
		if err := l.writeAndSync(l.buf); err != nil {
			// Nothing of this batch is acknowledged, and after a failed
			// fsync the page cache state is unknown: stop the node (the
			// restart reloads the ledger and cuts a torn tail).
			l.log.Error("ledger write failed, exiting", "err", err)
			os.Exit(1)
		}
		l.batches++
	}
	for i, ack := range l.acks {
		l.batch[i].to.deliver(ack)
	}
	clear(l.acks)
	l.acks = l.acks[:0]
	clear(l.batch)
	l.batch = l.batch[:0]
}

func (l *ledger) writeAndSync(b []byte) error {
	if _, err := l.file.Write(b); err != nil { // os.File.Write loops over short writes
		return err
	}
	for {
		err := syscall.Fdatasync(l.fd)
		if err != syscall.EINTR {
			return err
		}
	}
}

// stop commits what is queued, acknowledges it, and closes the file.
func (l *ledger) stop() error {
	close(l.quit)
	<-l.done
	l.log.Info("ledger closed", "lines_written", l.lines, "syncs", l.batches)
	return l.file.Close()
}
