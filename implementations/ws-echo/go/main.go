// ws-echo, Go implementation with lxzan/gws: a WebSocket echo server on
// net/http (GET /connect), plus /healthz and /langbench-gc; see
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
	"syscall"
	"time"

	"github.com/lxzan/gws"
)

const (
	maxMessage   = 1 << 20          // contract: larger messages close with 1009
	pingInterval = 5 * time.Second  // contract: a server ping every 5 s
	idleTimeout  = 15 * time.Second // contract: closed after 15 s without a frame
	readBuffer   = 4 << 10          // bufio.Reader per connection (gws default)

	// Shutdown budget (the harness allows 5 s): the HTTP side and the
	// WebSocket close frames together get closeBudget, then the process
	// exits 0 whatever is left.
	closeBudget    = 3500 * time.Millisecond
	closeWriteWait = 1 * time.Second // write deadline for the 1001 close frame
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

	reg := newRegistry()
	upgrader := gws.NewUpgrader(&handler{reg: reg}, &gws.ServerOption{
		// Messages of one connection are handled in order on its read
		// goroutine: an echo must keep the order, and the write in
		// OnMessage is the connection's backpressure.
		ParallelEnabled:     false,
		CheckUtf8Enabled:    true, // invalid UTF-8 in a text message: close 1007
		ReadMaxPayloadSize:  maxMessage,
		WriteMaxPayloadSize: maxMessage,
		ReadBufferSize:      readBuffer,
		HandshakeTimeout:    5 * time.Second,
		PermessageDeflate:   gws.PermessageDeflate{Enabled: false},
		Recovery:            gws.Recovery, // a panic in a handler is logged, the connection closed
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /connect", func(w http.ResponseWriter, r *http.Request) {
		// On failure gws has already answered 400 and closed the connection.
		// batchHijack: the echoes of one read batch go out in one write.
		socket, err := upgrader.Upgrade(batchHijack{w}, r)
		if err != nil {
			return
		}
		// ReadLoop on a goroutine of its own, so that net/http's request
		// state (this handler's frame) can be collected.
		go socket.ReadLoop()
	})
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
		"go", runtime.Version(), "library", "lxzan/gws")

	select {
	case err := <-serveErr:
		slog.Error("serve", "err", err)
		os.Exit(1)
	case <-ctx.Done():
	}

	slog.Info("stopping", "connections", reg.len())
	deadline := time.Now().Add(closeBudget)
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	httpDone := make(chan struct{})
	go func() {
		// Closes the listener, then waits for plain HTTP requests in
		// progress; upgraded (hijacked) connections are not its business.
		_ = srv.Shutdown(sctx)
		close(httpDone)
	}()
	empty := reg.closeAll(time.Now().Add(closeWriteWait))
	select {
	case <-empty:
	case <-sctx.Done():
	}
	<-httpDone
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("serve", "err", err)
	}
	slog.Info("stopped", "connections_left", reg.len())
}
