package main

import (
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	flatbuffers "github.com/google/flatbuffers/go"

	"langbench/blackhole/fbr"
)

// item is one finished record on its way to a writer: the FlatBuffers
// builder holding the buffer (handed back to the pool by the writer) and a
// scratch slice reused for the header block.
type item struct {
	b       *flatbuffers.Builder
	scratch []byte
}

const (
	builderInitial = 4 << 10
	// Builders that grew past this (large bodies) are dropped instead of
	// pooled, so that a burst of 1 MiB bodies does not pin memory.
	builderKeepMax = 64 << 10
)

var itemPool = sync.Pool{New: func() any {
	return &item{b: flatbuffers.NewBuilder(builderInitial), scratch: make([]byte, 0, 1024)}
}}

func getItem() *item {
	it := itemPool.Get().(*item)
	it.b.Reset()
	return it
}

func putItem(it *item) {
	if cap(it.b.Bytes) > builderKeepMax {
		return
	}
	itemPool.Put(it)
}

// Generated ids: "<start time ms>-<pid>-<counter>", unique across the
// server's life and its restarts (start time and pid differ).
var (
	idPrefix  []byte
	idCounter atomic.Uint64
)

func initIDs(startMs int64, pid int) {
	idPrefix = strconv.AppendInt(nil, startMs, 10)
	idPrefix = append(idPrefix, '-')
	idPrefix = strconv.AppendInt(idPrefix, int64(pid), 10)
	idPrefix = append(idPrefix, '-')
}

var idName = []byte("x-request-id")

// headerBlock appends the header block to dst: one "Name: value\r\n" per
// header line in the order received (name in the case received, value
// without surrounding whitespace, obs-fold lines joined with a space), and
// returns the value of the first non-empty X-Request-ID header as a
// sub-slice of the result (nil when there is none).
func headerBlock(dst, raw []byte) ([]byte, []byte) {
	var id []byte
	idStart, idEnd := -1, -1
	lastID := false
	for len(raw) > 0 {
		var line []byte
		if i := indexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			break // the empty line ending the block
		}
		if (line[0] == ' ' || line[0] == '\t') && len(dst) >= 2 {
			// obs-fold: continuation of the previous value.
			v := trimOWS(line)
			dst = dst[:len(dst)-2]
			if len(v) > 0 {
				dst = append(dst, ' ')
				dst = append(dst, v...)
			}
			dst = append(dst, '\r', '\n')
			if lastID {
				idEnd = len(dst) - 2
			}
			continue
		}
		colon := indexByte(line, ':')
		if colon < 0 {
			continue // fasthttp rejects such lines; never reached
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		dst = append(dst, name...)
		dst = append(dst, ':', ' ')
		vs := len(dst)
		dst = append(dst, value...)
		lastID = idStart < 0 && len(value) > 0 && equalFoldASCII(name, idName)
		if lastID {
			idStart, idEnd = vs, len(dst)
		}
		dst = append(dst, '\r', '\n')
	}
	if idStart >= 0 {
		id = dst[idStart:idEnd]
	}
	return dst, id
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func equalFoldASCII(a, lower []byte) bool {
	if len(a) != len(lower) {
		return false
	}
	for i, c := range a {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// latin1 returns b as UTF-8: b itself when it is valid UTF-8, else b read
// as ISO-8859-1.
func latin1(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/4)
	for _, c := range b {
		if c < 0x80 {
			out = append(out, c)
		} else {
			out = append(out, 0xC0|c>>6, 0x80|c&0x3F)
		}
	}
	return out
}

// build fills it.b with one finished fbr.Request.
func (it *item) build(method, uri, rawHeaders, body []byte) {
	b := it.b
	hdrs, id := headerBlock(it.scratch[:0], rawHeaders)
	it.scratch = hdrs[:0]
	if !utf8.Valid(hdrs) {
		hdrs = latin1(hdrs)
		_, id = headerBlock(nil, hdrs) // positions moved: find the id again
	}
	var bodyOff flatbuffers.UOffsetT
	if len(body) > 0 {
		bodyOff = b.CreateByteVector(body)
	}
	hdrOff := b.CreateByteString(hdrs)
	uriOff := b.CreateByteString(latin1(uri))
	methodOff := b.CreateByteString(latin1(method))
	var idOff flatbuffers.UOffsetT
	if len(id) > 0 {
		idOff = b.CreateByteString(id)
	} else {
		var tmp [64]byte
		gen := append(tmp[:0], idPrefix...)
		gen = strconv.AppendUint(gen, idCounter.Add(1), 10)
		idOff = b.CreateByteString(gen)
	}
	fbr.RequestStart(b)
	fbr.RequestAddId(b, idOff)
	fbr.RequestAddMethod(b, methodOff)
	fbr.RequestAddUri(b, uriOff)
	fbr.RequestAddHeaders(b, hdrOff)
	if len(body) > 0 {
		fbr.RequestAddBody(b, bodyOff)
	}
	fbr.FinishRequestBuffer(b, fbr.RequestEnd(b))
}
