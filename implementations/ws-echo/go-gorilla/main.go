// ws-echo, Go implementation with gorilla/websocket: a WebSocket echo
// server on net/http (GET /connect), plus /healthz and /langbench-gc; see
// scenarios/ws-echo/README.md for the contract.
package main

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

const (
	maxMessage   = 1 << 20          // contract: larger messages close with 1009
	pingInterval = 5 * time.Second  // contract: a server ping every 5 s
	idleTimeout  = 15 * time.Second // contract: closed after 15 s without a frame
	writeWait    = 10 * time.Second // deadline of every write (echo, ping, pong, close)
	writeBuffer  = 4 << 10          // pooled write buffer (gorilla's default size)

	// Shutdown budget (the harness allows 5 s): the HTTP side and the
	// WebSocket close handshakes together get closeBudget, then the process
	// exits 0 whatever is left.
	closeBudget = 3500 * time.Millisecond
	closeWait   = 1 * time.Second // wait for the peer's close frame after ours
)

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	log.SetOutput(os.Stderr)

	cpus := runtime.NumCPU()
	if v := os.Getenv("LANGBENCH_CPUS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			slog.Error("bad LANGBENCH_CPUS", "value", v)
			os.Exit(2)
		}
		cpus = n
	}
	runtime.GOMAXPROCS(cpus)

	host := os.Getenv("HOST")
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}

	s := &server{
		conns: make(map[*conn]struct{}),
		empty: make(chan struct{}),
		upgrader: websocket.Upgrader{
			HandshakeTimeout: 5 * time.Second,
			// 0: the connection keeps the 4 KiB bufio.Reader that net/http
			// read the handshake with (no second read buffer).
			ReadBufferSize: 0,
			// The write buffer is taken from a pool for each message and
			// given back after it, so an idle connection holds none.
			WriteBufferSize:   writeBuffer,
			WriteBufferPool:   &sync.Pool{},
			EnableCompression: false, // permessage-deflate never negotiated
			// CheckOrigin nil: gorilla's same-origin check (a request
			// without an Origin header, as from any non-browser client,
			// passes).
		},
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /connect", s.connect)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /langbench-gc", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		w.WriteHeader(http.StatusNoContent)
	})
	// Any other path: the mux's 404.

	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		slog.Error("listen", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	slog.Info("listening", "addr", ln.Addr().String(), "gomaxprocs", runtime.GOMAXPROCS(0),
		"go", runtime.Version(), "library", "gorilla/websocket")

	select {
	case err := <-serveErr:
		slog.Error("serve", "err", err)
		os.Exit(1)
	case <-ctx.Done():
	}

	slog.Info("stopping", "connections", s.len())
	sctx, cancel := context.WithTimeout(context.Background(), closeBudget)
	defer cancel()
	httpDone := make(chan struct{})
	go func() {
		// Closes the listener, then waits for plain HTTP requests in
		// progress; upgraded (hijacked) connections are not its business.
		_ = srv.Shutdown(sctx)
		close(httpDone)
	}()
	empty := s.closeAll()
	select {
	case <-empty:
	case <-sctx.Done():
	}
	<-httpDone
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("serve", "err", err)
	}
	slog.Info("stopped", "connections_left", s.len())
}
