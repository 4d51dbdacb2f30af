package main

import (
	"bytes"
	"errors"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

type server struct {
	upgrader websocket.Upgrader

	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing bool
	empty   chan struct{} // closed once closing and no connection is left
}

// conn is one WebSocket connection: its reader goroutine (serve) reads a
// message and writes its echo (the only writer of data frames, so it needs
// no hand-off); the keep-alive ping is written by a runtime timer
// (time.AfterFunc, no goroutine of its own) with WriteControl, which
// gorilla allows concurrently with the reader's writes (its write lock).
type conn struct {
	ws     *websocket.Conn
	mu     sync.Mutex
	ping   *time.Timer
	closed bool
}

func (c *conn) startPing() {
	c.mu.Lock()
	if !c.closed {
		c.ping = time.AfterFunc(pingInterval, c.sendPing)
	}
	c.mu.Unlock()
}

func (c *conn) sendPing() {
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
		return // the connection is closing or broken; its reader ends it
	}
	c.mu.Lock()
	if !c.closed {
		c.ping.Reset(pingInterval)
	}
	c.mu.Unlock()
}

func (c *conn) stop() {
	c.mu.Lock()
	c.closed = true
	if c.ping != nil {
		c.ping.Stop()
	}
	c.mu.Unlock()
}

// Message buffers: one per message being echoed, from a pool; a buffer
// grown past maxPooled (a large message) is left to the GC rather than
// kept in the pool.
const maxPooled = 64 << 10

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return buffers.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooled {
		return
	}
	b.Reset()
	buffers.Put(b)
}

var shutdownClose = websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")

func (s *server) connect(w http.ResponseWriter, r *http.Request) {
	// On failure gorilla has already answered (400, 403, 405...).
	// batchHijack: the echoes of one read batch go out in one write.
	ws, err := s.upgrader.Upgrade(batchHijack{w}, r, nil)
	if err != nil {
		return
	}
	// The connection's goroutine is a new one, so that net/http's request
	// state (this handler's frame) can be collected.
	go s.serve(&conn{ws: ws})
}

func (s *server) serve(c *conn) {
	ws := c.ws
	defer ws.Close()
	if !s.add(c) {
		_ = ws.WriteControl(websocket.CloseMessage, shutdownClose, time.Now().Add(closeWait))
		return
	}
	defer s.remove(c)

	ws.SetReadLimit(maxMessage) // a larger message: gorilla sends 1009, the read fails
	_ = ws.SetReadDeadline(time.Now().Add(idleTimeout))
	ws.SetPongHandler(func(string) error {
		return ws.SetReadDeadline(time.Now().Add(idleTimeout))
	})
	ws.SetPingHandler(func(data string) error {
		now := time.Now()
		_ = ws.SetReadDeadline(now.Add(idleTimeout))
		err := ws.WriteControl(websocket.PongMessage, []byte(data), now.Add(writeWait))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	ws.SetCloseHandler(func(code int, _ string) error {
		// The contract: answer with the same code, 1000 when it had none.
		if code == websocket.CloseNoStatusReceived {
			code = websocket.CloseNormalClosure
		}
		err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(writeWait))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil // we closed first (shutdown): this is the peer's answer
		}
		return err
	})
	c.startPing()

	for {
		mt, r, err := ws.NextReader()
		if err != nil {
			return // peer's close (answered by the handler), timeout, protocol error (1002 sent)
		}
		buf := getBuffer()
		if _, err := buf.ReadFrom(r); err != nil {
			putBuffer(buf)
			return // websocket.ErrReadLimit: 1009 already sent
		}
		now := time.Now()
		_ = ws.SetReadDeadline(now.Add(idleTimeout))
		// gorilla does not check text messages: RFC 6455 wants 1007.
		if mt == websocket.TextMessage && !utf8.Valid(buf.Bytes()) {
			putBuffer(buf)
			_ = ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, "invalid UTF-8"),
				now.Add(writeWait))
			return
		}
		_ = ws.SetWriteDeadline(now.Add(writeWait))
		err = ws.WriteMessage(mt, buf.Bytes())
		putBuffer(buf)
		if err != nil {
			return
		}
	}
}

// add registers c; false once the server is shutting down.
func (s *server) add(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) remove(c *conn) {
	c.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.closing && len(s.conns) == 0 {
		select {
		case <-s.empty:
		default:
			close(s.empty)
		}
	}
}

func (s *server) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// closeAll refuses new connections and starts the close handshake on every
// open one: a close frame (1001 going away), then the reader waits at most
// closeWait for the peer's close frame before it closes the TCP
// connection. Each on a goroutine of its own, so that a peer that does not
// read cannot hold up the others. The returned channel is closed when no
// connection is left.
func (s *server) closeAll() <-chan struct{} {
	s.mu.Lock()
	s.closing = true
	open := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		open = append(open, c)
	}
	if len(s.conns) == 0 {
		close(s.empty)
	}
	s.mu.Unlock()
	for _, c := range open {
		go func(c *conn) {
			c.stop()
			deadline := time.Now().Add(closeWait)
			if err := c.ws.WriteControl(websocket.CloseMessage, shutdownClose, deadline); err != nil {
				_ = c.ws.Close()
				return
			}
			// The reader goroutine gets the peer's close frame or times out.
			_ = c.ws.NetConn().SetReadDeadline(deadline)
		}(c)
	}
	return s.empty
}
