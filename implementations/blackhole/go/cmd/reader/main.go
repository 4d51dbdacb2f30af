// reader: decodes every *.lz4 and *.lz4.tmp file of a blackhole output
// folder and prints one JSON summary line (scenarios/blackhole/README.md,
// "Readers"). Usage: reader DIR
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pierrec/lz4/v4"

	"langbench/blackhole/fbr"
)

type summary struct {
	OK           bool    `json:"ok"`
	Files        int     `json:"files"`
	TmpFiles     int     `json:"tmp_files"`
	Records      int64   `json:"records"`
	StreamBytes  int64   `json:"stream_bytes"`
	FileBytes    int64   `json:"file_bytes"`
	TruncatedTmp int     `json:"truncated_tmp"`
	Digest       string  `json:"digest"`
	Error        *string `json:"error"`
}

const (
	frameMagic     = 0x184D2204
	skippableMagic = 0x184D2A50 // low 4 bits free
	maxRecord      = 64 << 20   // a longer length prefix is corruption
)

// streamError is a problem of the LZ4 stream (bad or truncated frame,
// checksum): it ends a .tmp file (truncated_tmp), fails a final file.
type streamError struct{ msg string }

func (e *streamError) Error() string { return e.msg }

func streamErr(format string, a ...any) error { return &streamError{fmt.Sprintf(format, a...)} }

// formatError is a bad record: it fails the folder, .tmp or not.
type formatError struct{ msg string }

func (e *formatError) Error() string { return e.msg }

type fileReader struct {
	r       *bufio.Reader
	sum     *summary
	digest  hash.Hash
	pending []byte // record stream not yet decoded
	dst     []byte // block output
	hist    []byte // last 64 KiB of output (linked blocks)
	src     []byte // compressed block
	content xxh32
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: reader DIR")
		os.Exit(2)
	}
	sum := run(os.Args[1])
	line, _ := json.Marshal(sum)
	fmt.Println(string(line))
	if !sum.OK {
		os.Exit(1)
	}
}

func run(dir string) *summary {
	sum := &summary{OK: true}
	h := sha256.New()
	fail := func(err error) *summary {
		msg := err.Error()
		sum.OK, sum.Error = false, &msg
		sum.Digest = hex.EncodeToString(h.Sum(nil))
		return sum
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fail(fmt.Errorf("%s: not a folder", dir))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fail(err)
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".lz4") || strings.HasSuffix(n, ".lz4.tmp") {
			names = append(names, n)
		}
	}
	sort.Strings(names) // bytewise
	fr := &fileReader{sum: sum, digest: h}
	for _, name := range names {
		tmp := strings.HasSuffix(name, ".tmp")
		if tmp {
			sum.TmpFiles++
		} else {
			sum.Files++
		}
		if err := fr.readFile(filepath.Join(dir, name)); err != nil {
			var se *streamError
			if tmp && errors.As(err, &se) {
				sum.TruncatedTmp++
				continue
			}
			return fail(fmt.Errorf("%s: %w", name, err))
		}
	}
	sum.Digest = hex.EncodeToString(h.Sum(nil))
	return sum
}

func (fr *fileReader) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	fr.sum.FileBytes += st.Size()
	if fr.r == nil {
		fr.r = bufio.NewReaderSize(f, 1<<20)
	} else {
		fr.r.Reset(f)
	}
	fr.pending = fr.pending[:0]
	for {
		var m [4]byte
		n, err := io.ReadFull(fr.r, m[:])
		if n == 0 && err == io.EOF {
			break
		}
		if err != nil {
			return readErr(err, "file ends inside a LZ4 frame")
		}
		magic := binary.LittleEndian.Uint32(m[:])
		switch {
		case magic == frameMagic:
			if err := fr.frame(); err != nil {
				return err
			}
		case magic&0xFFFFFFF0 == skippableMagic:
			if _, err := io.ReadFull(fr.r, m[:]); err != nil {
				return readErr(err, "file ends inside a skippable frame")
			}
			size := int64(binary.LittleEndian.Uint32(m[:]))
			if k, err := io.CopyN(io.Discard, fr.r, size); err != nil || k != size {
				return readErr(err, "file ends inside a skippable frame")
			}
		default:
			return streamErr("LZ4: bad frame magic %#08x", magic)
		}
	}
	if len(fr.pending) > 0 {
		return streamErr("file ends inside a record (%d bytes left)", len(fr.pending))
	}
	return nil
}

// readErr turns a short read into a stream error (truncation) and passes
// real I/O errors through.
func readErr(err error, msg string) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF || err == nil {
		return streamErr("%s", msg)
	}
	return err
}

func (fr *fileReader) frame() error {
	const trunc = "file ends inside a LZ4 frame"
	var d [15]byte // FLG BD [content size 8] [dict id 4] HC
	if _, err := io.ReadFull(fr.r, d[:2]); err != nil {
		return readErr(err, trunc)
	}
	flg, bd := d[0], d[1]
	if flg>>6 != 1 {
		return streamErr("LZ4: frame version %d", flg>>6)
	}
	if flg&0x02 != 0 || bd&0x8F != 0 {
		return streamErr("LZ4: reserved bits set in the frame descriptor")
	}
	independent := flg&0x20 != 0
	blockSum := flg&0x10 != 0
	hasSize := flg&0x08 != 0
	contentSum := flg&0x04 != 0
	hasDict := flg&0x01 != 0
	idx := (bd >> 4) & 7
	if idx < 4 {
		return streamErr("LZ4: bad block size index %d", idx)
	}
	maxBlock := 1 << (8 + 2*uint(idx))
	n := 2
	if hasSize {
		n += 8
	}
	if hasDict {
		n += 4
	}
	if _, err := io.ReadFull(fr.r, d[2:n+1]); err != nil {
		return readErr(err, trunc)
	}
	if byte(xxh32Sum(d[:n])>>8) != d[n] {
		return streamErr("LZ4: frame header checksum mismatch")
	}
	if hasDict {
		return streamErr("LZ4: frames with a dictionary are not supported")
	}
	var contentSize uint64
	if hasSize {
		contentSize = binary.LittleEndian.Uint64(d[2:10])
	}
	if cap(fr.dst) < maxBlock {
		fr.dst = make([]byte, maxBlock)
	}
	dst := fr.dst[:maxBlock]
	fr.hist = fr.hist[:0]
	fr.content.reset()
	var total uint64
	for {
		var b [4]byte
		if _, err := io.ReadFull(fr.r, b[:]); err != nil {
			return readErr(err, trunc)
		}
		word := binary.LittleEndian.Uint32(b[:])
		if word == 0 { // end mark
			break
		}
		raw := word&0x80000000 != 0
		size := int(word & 0x7FFFFFFF)
		if size > maxBlock {
			return streamErr("LZ4: block of %d bytes over the frame's maximum %d", size, maxBlock)
		}
		var out []byte
		if raw {
			// Stored block: pass on whatever is there, even when the
			// file ends inside it (as LZ4F does).
			k, err := io.ReadFull(fr.r, dst[:size])
			out = dst[:k]
			if k > 0 {
				if e := fr.output(out, independent, contentSum); e != nil {
					return e
				}
				total += uint64(k)
			}
			if err != nil {
				return readErr(err, trunc)
			}
			if blockSum {
				if err := fr.blockChecksum(out); err != nil {
					return err
				}
			}
			continue
		}
		if cap(fr.src) < size {
			fr.src = make([]byte, maxBlock)
		}
		src := fr.src[:size]
		if _, err := io.ReadFull(fr.r, src); err != nil {
			return readErr(err, trunc)
		}
		if blockSum {
			if err := fr.blockChecksum(src); err != nil {
				return err
			}
		}
		var k int
		var err error
		if independent {
			k, err = lz4.UncompressBlock(src, dst)
		} else {
			k, err = lz4.UncompressBlockWithDict(src, dst, fr.hist)
		}
		if err != nil {
			return streamErr("LZ4: bad block: %v", err)
		}
		if err := fr.output(dst[:k], independent, contentSum); err != nil {
			return err
		}
		total += uint64(k)
	}
	if contentSum {
		var b [4]byte
		if _, err := io.ReadFull(fr.r, b[:]); err != nil {
			return readErr(err, trunc)
		}
		if binary.LittleEndian.Uint32(b[:]) != fr.content.sum() {
			return streamErr("LZ4: content checksum mismatch")
		}
	}
	if hasSize && total != contentSize {
		return streamErr("LZ4: frame holds %d bytes, its header says %d", total, contentSize)
	}
	return nil
}

func (fr *fileReader) blockChecksum(data []byte) error {
	var b [4]byte
	if _, err := io.ReadFull(fr.r, b[:]); err != nil {
		return readErr(err, "file ends inside a LZ4 frame")
	}
	if binary.LittleEndian.Uint32(b[:]) != xxh32Sum(data) {
		return streamErr("LZ4: block checksum mismatch")
	}
	return nil
}

// output takes one piece of decompressed stream: history, checksum, and
// the records it completes.
func (fr *fileReader) output(data []byte, independent, contentSum bool) error {
	if !independent {
		fr.hist = append(fr.hist, data...)
		if over := len(fr.hist) - 64<<10; over > 0 {
			fr.hist = fr.hist[:copy(fr.hist, fr.hist[over:])]
		}
	}
	if contentSum {
		fr.content.write(data)
	}
	fr.sum.StreamBytes += int64(len(data))
	fr.pending = append(fr.pending, data...)
	p := fr.pending
	pos := 0
	for len(p)-pos >= 8 {
		size := binary.LittleEndian.Uint64(p[pos:])
		if size > maxRecord {
			return &formatError{fmt.Sprintf("record length %d is not plausible", size)}
		}
		if uint64(len(p)-pos-8) < size {
			break
		}
		if err := fr.record(p[pos+8 : pos+8+int(size)]); err != nil {
			return err
		}
		pos += 8 + int(size)
	}
	fr.pending = p[:copy(p, p[pos:])]
	return nil
}

// record checks every offset of one fbr.Request buffer against the buffer
// (the Go FlatBuffers runtime has no verifier), then reads its fields
// through the generated accessors and adds them to the digest.
func (fr *fileReader) record(buf []byte) error {
	if err := check(buf); err != nil {
		return &formatError{err.Error()}
	}
	r := fbr.GetRootAsRequest(buf, 0)
	fields := [5][]byte{r.Id(), r.Method(), r.Uri(), r.Headers(), r.BodyBytes()}
	if len(fields[0]) == 0 {
		return &formatError{"record without an id"}
	}
	var l [4]byte
	for _, f := range fields {
		binary.LittleEndian.PutUint32(l[:], uint32(len(f)))
		fr.digest.Write(l[:])
		fr.digest.Write(f)
	}
	fr.sum.Records++
	return nil
}

func check(buf []byte) error {
	n := uint64(len(buf))
	if n < 8 {
		return fmt.Errorf("buffer of %d bytes", n)
	}
	u16 := func(at uint64) uint64 { return uint64(binary.LittleEndian.Uint16(buf[at:])) }
	u32 := func(at uint64) uint64 { return uint64(binary.LittleEndian.Uint32(buf[at:])) }
	root := u32(0)
	if root+4 > n {
		return errors.New("root offset out of the buffer")
	}
	vt := int64(root) - int64(int32(binary.LittleEndian.Uint32(buf[root:])))
	if vt < 0 || uint64(vt)+4 > n {
		return errors.New("vtable out of the buffer")
	}
	vtLen, objLen := u16(uint64(vt)), u16(uint64(vt)+2)
	if vtLen < 4 || uint64(vt)+vtLen > n || root+objLen > n {
		return errors.New("vtable or table runs past the buffer")
	}
	for i := uint64(0); i < 5; i++ {
		slot := 4 + 2*i
		if slot >= vtLen {
			continue
		}
		o := u16(uint64(vt) + slot)
		if o == 0 {
			continue
		}
		if o+4 > objLen {
			return fmt.Errorf("field %d outside its table", i)
		}
		at := root + o
		vec := at + u32(at)
		if vec+4 > n {
			return fmt.Errorf("field %d runs past the buffer", i)
		}
		length := u32(vec)
		term := uint64(1) // strings carry a 0 terminator
		if i == 4 {
			term = 0
		}
		if vec+4+length+term > n {
			return fmt.Errorf("field %d runs past the buffer", i)
		}
	}
	return nil
}
