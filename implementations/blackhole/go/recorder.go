package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pierrec/lz4/v4"
	"golang.org/x/sync/semaphore"
)

// Recorder design: request handlers build the finished FlatBuffers record
// themselves (pooled builders) and hand it over a channel; each writer
// goroutine takes records from that channel and appends them to its own file
// sequence through an LZ4 frame writer and a bufio.Writer. The hand-off is
// bounded both in records (the channel's capacity) and in bytes (a weighted
// semaphore held from the hand-off until the record is written); a handler
// that hits either bound waits (backpressure, never loss).

// Hand-off bounds (BLACKHOLE_QUEUE_RECORDS and BLACKHOLE_QUEUE_BYTES
// override them, for tests).
const (
	defaultQueueRecords = 1024    // records handed over and not yet taken by a writer
	defaultQueueBytes   = 8 << 20 // record bytes handed over and not yet written
)

const (
	lz4Block     = lz4.Block256Kb
	fileBuffer   = 1 << 20 // bufio between the LZ4 writer and the file
	tickInterval = 250 * time.Millisecond
	flushEvery   = 500 * time.Millisecond
)

type recorder struct {
	ch          chan *item
	room        *semaphore.Weighted // queued record bytes, FIFO waiters
	queueBytes  int64
	wg          sync.WaitGroup
	dir         string
	prefix      string // bh-<start ms>-<pid>
	rotateBytes int64
	rotateAfter time.Duration
}

func newRecorder(dir string, startMs int64, pid, writers, queueRecords int, queueBytes, rotateBytes int64, rotateAfter time.Duration) *recorder {
	r := &recorder{
		ch:          make(chan *item, queueRecords),
		room:        semaphore.NewWeighted(queueBytes),
		queueBytes:  queueBytes,
		dir:         dir,
		prefix:      fmt.Sprintf("bh-%013d-%d", startMs, pid),
		rotateBytes: rotateBytes,
		rotateAfter: rotateAfter,
	}
	for i := 0; i < writers; i++ {
		w := &writer{rec: r, index: i}
		r.wg.Add(1)
		go w.run()
	}
	return r
}

// weight is what a record of n stream bytes holds of the byte bound: a
// record larger than the whole bound takes all of it, so it passes alone
// once the queue is empty instead of waiting forever.
func (r *recorder) weight(n int) int64 {
	return min(int64(n), r.queueBytes)
}

// put hands a finished record to the writers, waiting while the queue holds
// too many bytes or records (the writer releases the bytes once written).
func (r *recorder) put(it *item) {
	// Acquire fails only when its context is done; Background never is.
	_ = r.room.Acquire(context.Background(), r.weight(streamSize(it)))
	r.ch <- it
}

// streamSize is the record's size in the stream: length prefix + buffer.
func streamSize(it *item) int {
	return 8 + len(it.b.FinishedBytes())
}

// close stops the writers once the channel is drained; every file is
// finalised and renamed when it returns.
func (r *recorder) close() {
	close(r.ch)
	r.wg.Wait()
}

type writer struct {
	rec     *recorder
	index   int
	seq     int
	f       *os.File
	bw      *bufio.Writer
	zw      *lz4.Writer
	name    string // final path; the file is written at name + ".tmp"
	opened  time.Time
	stream  int64 // uncompressed stream bytes in the current file
	dirty   bool  // records written since the last flush
	flushed time.Time
	prefix  [8]byte
}

func fatal(msg string, err error) {
	slog.Error(msg, "err", err)
	os.Exit(1)
}

func (w *writer) run() {
	defer w.rec.wg.Done()
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	for {
		select {
		case it, ok := <-w.rec.ch:
			if !ok {
				w.closeFile()
				return
			}
			w.write(it)
		case now := <-tick.C:
			if w.f == nil {
				continue
			}
			if now.Sub(w.opened) >= w.rec.rotateAfter {
				w.closeFile()
			} else if w.dirty && now.Sub(w.flushed) >= flushEvery {
				w.flush(now)
			}
		}
	}
}

func (w *writer) open() {
	w.seq++
	w.name = filepath.Join(w.rec.dir, fmt.Sprintf("%s-%02d-%06d.lz4", w.rec.prefix, w.index, w.seq))
	f, err := os.OpenFile(w.name+".tmp", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		fatal("recorder: cannot create file", err)
	}
	w.f = f
	if w.bw == nil {
		w.bw = bufio.NewWriterSize(f, fileBuffer)
		w.zw = lz4.NewWriter(w.bw)
		if err := w.zw.Apply(
			lz4.BlockSizeOption(lz4Block),
			lz4.BlockChecksumOption(false),
			lz4.ChecksumOption(true),
			lz4.CompressionLevelOption(lz4.Fast),
			lz4.ConcurrencyOption(1),
		); err != nil {
			fatal("recorder: lz4 options", err)
		}
	} else {
		w.bw.Reset(f)
		w.zw.Reset(w.bw) // keeps the options
	}
	w.opened = time.Now()
	w.flushed = w.opened
	w.stream = 0
}

func (w *writer) write(it *item) {
	if w.f == nil {
		w.open()
	}
	buf := it.b.FinishedBytes()
	size := streamSize(it)
	binary.LittleEndian.PutUint64(w.prefix[:], uint64(len(buf)))
	if _, err := w.zw.Write(w.prefix[:]); err != nil {
		fatal("recorder: write "+w.name+".tmp", err)
	}
	if _, err := w.zw.Write(buf); err != nil {
		fatal("recorder: write "+w.name+".tmp", err)
	}
	w.stream += int64(size)
	w.dirty = true
	putItem(it)
	w.rec.room.Release(w.rec.weight(size))
	if w.stream >= w.rec.rotateBytes {
		w.closeFile()
	}
}

func (w *writer) flush(now time.Time) {
	if err := w.zw.Flush(); err != nil {
		fatal("recorder: flush "+w.name+".tmp", err)
	}
	if err := w.bw.Flush(); err != nil {
		fatal("recorder: flush "+w.name+".tmp", err)
	}
	w.dirty = false
	w.flushed = now
}

// closeFile ends the LZ4 frame, closes the file and renames it to its
// final name. Files are opened with their first record: no empty files.
func (w *writer) closeFile() {
	if w.f == nil {
		return
	}
	tmp := w.name + ".tmp"
	if err := w.zw.Close(); err != nil {
		fatal("recorder: close "+tmp, err)
	}
	if err := w.bw.Flush(); err != nil {
		fatal("recorder: flush "+tmp, err)
	}
	if err := w.f.Close(); err != nil {
		fatal("recorder: close "+tmp, err)
	}
	if err := os.Rename(tmp, w.name); err != nil {
		fatal("recorder: rename "+tmp, err)
	}
	w.f = nil
	w.dirty = false
}
