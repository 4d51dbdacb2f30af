package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// batchLimit bounds the output one connection gathers between two reads;
// a write that would take it past this goes out at once, and a frame of
// this size or more is written straight through.
const batchLimit = 64 << 10

// batchBufs lends the gathering buffers: a connection holds one only
// between its first queued write and the next flush, so an idle connection
// holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, batchLimit); return &b }}

// batchConn flushes the echoes of one read batch together, as Netty's
// flush on channelReadComplete does. gws writes every frame with its own
// write(2); on loopback each write also runs the peer's receive path on the
// server's CPU, so the per-message cost is mostly that write. Here a write
// made while the reader goroutine is at work (handling what it has read) is
// gathered, and written out when the reader finds the socket empty: its
// Read tries the socket without waiting (through the TCP connection's
// syscall.RawConn, which also keeps the read deadline) and, on EAGAIN,
// writes the gathered bytes before it parks in the netpoller. A write made
// while the reader is parked (a ping from its timer, the shutdown's close
// frame) goes to the socket at once, so nothing sits in the buffer while
// the connection is idle.
//
// Flushing only when the socket is empty also keeps a busy connection from
// holding the CPU: flushed per read instead, the client's answers to the
// first echoes were already there at the next read, the reader goroutine
// never parked, and it ran until the scheduler's 10 ms preemption while
// the other connections waited.
type batchConn struct {
	net.Conn
	raw     syscall.RawConn // nil when the socket has none: flush before every read
	mu      sync.Mutex
	buf     *[]byte // nil while nothing is gathered
	waiting bool    // the reader is parked (or not started): write through
	err     error   // a gathered write that failed, reported by the next call
}

func newBatchConn(c net.Conn) *batchConn {
	// Until the reader's first Read (the handshake's answer), writes go
	// straight to the socket.
	b := &batchConn{Conn: c, waiting: true}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			b.raw = raw
		}
	}
	return b
}

// flushLocked writes out what is gathered; c.mu is held.
func (c *batchConn) flushLocked() error {
	if c.buf == nil {
		return c.err
	}
	b := *c.buf
	if c.err == nil && len(b) > 0 {
		_, c.err = c.Conn.Write(b)
	}
	*c.buf = b[:0]
	batchBufs.Put(c.buf)
	c.buf = nil
	return c.err
}

// park writes out what is gathered and marks the reader as waiting.
func (c *batchConn) park() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting = true
	return c.flushLocked()
}

func (c *batchConn) Read(p []byte) (int, error) {
	if c.raw == nil {
		if err := c.park(); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		c.waiting = false
		c.mu.Unlock()
		return n, err
	}
	var n int
	var rerr error
	// The callback runs once, and again each time the netpoller finds the
	// socket readable after it returned false.
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), p)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			if ferr := c.park(); ferr != nil {
				rerr = ferr
				return true
			}
			return false
		}
		return true
	})
	c.mu.Lock()
	c.waiting = false
	c.mu.Unlock()
	switch {
	case err != nil: // the read deadline, or the socket closed
		return 0, err
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Addr: c.RemoteAddr(), Err: rerr}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.waiting || len(p) >= batchLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if c.buf != nil && len(*c.buf)+len(p) > batchLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if c.buf == nil {
		c.buf = batchBufs.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// Close writes out what is gathered (a close frame queued behind echoes),
// then closes the socket.
func (c *batchConn) Close() error {
	c.mu.Lock()
	_ = c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}

// batchHijack hands the WebSocket library a batchConn in place of the
// hijacked socket.
type batchHijack struct {
	http.ResponseWriter
}

func (h batchHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	raw, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	conn := newBatchConn(raw)
	// A library that reads through net/http's buffered reader must read
	// through the batchConn too (Reset keeps the reader's buffer). Bytes the
	// client sent before the handshake's answer would be dropped by Reset:
	// then it is skipped (gorilla refuses such a client, gws reads through a
	// reader of its own anyway).
	if brw.Reader.Buffered() == 0 {
		brw.Reader.Reset(conn)
	}
	return conn, brw, nil
}
