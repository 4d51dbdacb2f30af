package main

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

var shutdownReason = []byte("server shutting down")

// conn is the server's state of one WebSocket connection: its keep-alive
// ping timer. The timer is a runtime timer (time.AfterFunc), not a
// goroutine: an idle connection costs only its ReadLoop goroutine.
type conn struct {
	socket *gws.Conn
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

// sendPing runs on the timer's goroutine; gws serialises it with the echo
// writes of the read goroutine (one write mutex per connection).
func (c *conn) sendPing() {
	if err := c.socket.WritePing(nil); err != nil {
		return // gws has closed the connection; OnClose follows
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

// registry holds every open connection, for the shutdown.
type registry struct {
	mu      sync.Mutex
	conns   map[*gws.Conn]*conn
	closing bool
	empty   chan struct{} // closed once closing and no connection is left
	// stopping mirrors closing for the read path, without the mutex: once
	// set, deadlines are no longer moved forward, so the shutdown's write
	// deadline cannot be undone by a message that is still being echoed.
	stopping atomic.Bool
}

func newRegistry() *registry {
	return &registry{conns: make(map[*gws.Conn]*conn), empty: make(chan struct{})}
}

// add registers c; false once the server is shutting down.
func (r *registry) add(c *conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.conns[c.socket] = c
	return true
}

func (r *registry) remove(socket *gws.Conn) *conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conns[socket]
	delete(r.conns, socket)
	if r.closing && len(r.conns) == 0 {
		select {
		case <-r.empty:
		default:
			close(r.empty)
		}
	}
	return c
}

func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// closeAll refuses new connections and sends every open one a close frame
// (1001 going away), each on a goroutine of its own so that a peer that
// does not read cannot hold up the others (its write gives up at
// writeDeadline). gws closes the TCP connection right after the frame; the
// ReadLoop then ends and OnClose removes the connection. The returned
// channel is closed when none is left.
func (r *registry) closeAll(writeDeadline time.Time) <-chan struct{} {
	r.mu.Lock()
	r.closing = true
	r.stopping.Store(true)
	open := make([]*conn, 0, len(r.conns))
	for _, c := range r.conns {
		open = append(open, c)
	}
	if len(r.conns) == 0 {
		close(r.empty)
	}
	r.mu.Unlock()
	for _, c := range open {
		go func(c *conn) {
			c.stop()
			_ = c.socket.NetConn().SetWriteDeadline(writeDeadline)
			_ = c.socket.WriteClose(1001, shutdownReason)
		}(c)
	}
	return r.empty
}

// handler is the gws event handler, shared by every connection. The read
// deadline is gws's documented keep-alive pattern: set at open and moved
// forward by every frame that arrives (message, ping, pong); a connection
// silent for idleTimeout fails its read and is closed by gws.
type handler struct {
	reg *registry
}

func (h *handler) alive(socket *gws.Conn) {
	if h.reg.stopping.Load() {
		return
	}
	_ = socket.SetDeadline(time.Now().Add(idleTimeout))
}

func (h *handler) OnOpen(socket *gws.Conn) {
	c := &conn{socket: socket}
	if !h.reg.add(c) {
		_ = socket.WriteClose(1001, shutdownReason)
		return
	}
	h.alive(socket)
	c.startPing()
}

func (h *handler) OnClose(socket *gws.Conn, err error) {
	if c := h.reg.remove(socket); c != nil {
		c.stop()
	}
}

func (h *handler) OnPing(socket *gws.Conn, payload []byte) {
	h.alive(socket)
	_ = socket.WritePong(payload)
}

func (h *handler) OnPong(socket *gws.Conn, payload []byte) {
	h.alive(socket)
}

func (h *handler) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close() // back to gws's buffer pool
	h.alive(socket)
	_ = socket.WriteMessage(message.Opcode, message.Bytes())
}
