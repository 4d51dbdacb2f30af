// blackhole, Go implementation: a fasthttp server that answers 200 to any
// request and records each one (FlatBuffers fbr.Request, 8-byte LE length
// prefix, LZ4 frames) to rotating files; see scenarios/blackhole/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	maxBody          = 1 << 20 // 1 MiB, after de-chunking
	shutdownInFlight = 2 * time.Second
	shutdownBudget   = 4500 * time.Millisecond
)

type server struct {
	rec      *recorder // nil with RECORD=0
	stopped  atomic.Bool
	inflight atomic.Int64
}

func (s *server) handle(ctx *fasthttp.RequestCtx) {
	if s.rec != nil {
		s.inflight.Add(1)
		if s.stopped.Load() {
			// Shutdown has passed the in-flight window: the queue is about
			// to close, so this request is refused (and not recorded).
			s.inflight.Add(-1)
			ctx.SetConnectionClose()
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			return
		}
		h := &ctx.Request.Header
		it := getItem()
		it.build(h.Method(), h.RequestURI(), h.RawHeaders(), ctx.Request.Body())
		s.rec.put(it) // blocks while the queue is full (backpressure)
		s.inflight.Add(-1)
	}
	// 200 with an empty body (Content-Length: 0) is fasthttp's default.
}

func errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("Request Entity Too Large", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &small):
		ctx.Error("Request Header Fields Too Large", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.As(err, &netErr) && netErr.Timeout():
		ctx.Error("Request Timeout", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("Bad Request", fasthttp.StatusBadRequest)
	}
}

// rateLogger passes fasthttp's own messages (bad requests, connection
// errors) to stderr at most once per 10 s, so nothing is logged per request.
type rateLogger struct {
	last       atomic.Int64
	suppressed atomic.Int64
}

func (l *rateLogger) Printf(format string, args ...any) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(10*time.Second) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	n := l.suppressed.Swap(0)
	slog.Warn("fasthttp: "+fmt.Sprintf(format, args...), "suppressed_since_last", n)
}

func envInt(name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		slog.Error("bad environment value", "name", name, "value", v)
		os.Exit(2)
	}
	return n
}

func envSeconds(name string, def float64) time.Duration {
	v := os.Getenv(name)
	f := def
	if v != "" {
		var err error
		f, err = strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			slog.Error("bad environment value", "name", name, "value", v)
			os.Exit(2)
		}
	}
	return time.Duration(f * float64(time.Second))
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	log.SetOutput(os.Stderr)

	cpus := int(envInt("LANGBENCH_CPUS", int64(runtime.NumCPU())))
	runtime.GOMAXPROCS(cpus)

	record := true
	switch os.Getenv("RECORD") {
	case "", "1":
	case "0":
		record = false
	default:
		slog.Error("RECORD must be 0 or 1", "value", os.Getenv("RECORD"))
		os.Exit(2)
	}
	dir := os.Getenv("BLACKHOLE_DIR")
	if dir == "" {
		dir = os.Getenv("LANGBENCH_INSTANCE_DIR")
	}
	if dir == "" {
		dir = "./recordings"
	}
	queueRecords := int(envInt("BLACKHOLE_QUEUE_RECORDS", defaultQueueRecords))
	queueBytes := envInt("BLACKHOLE_QUEUE_BYTES", defaultQueueBytes)
	rotateBytes := envInt("BLACKHOLE_ROTATE_BYTES", 128<<20)
	rotateAfter := envSeconds("BLACKHOLE_ROTATE_SECONDS", 60)
	host := os.Getenv("HOST")
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}

	// BLACKHOLE_CPUPROFILE=path: write a CPU profile (runtime/pprof) of the
	// whole run, stopped at SIGTERM/SIGINT. Off by default; for profiling.
	var profile *os.File
	if path := os.Getenv("BLACKHOLE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			slog.Error("cpu profile", "path", path, "err", err)
			os.Exit(2)
		}
		profile = f
	}

	start := time.Now()
	pid := os.Getpid()
	initIDs(start.UnixMilli(), pid)
	s := &server{}
	writers := 0
	if record {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			slog.Error("cannot create the output folder", "dir", dir, "err", err)
			os.Exit(1)
		}
		writers = max(1, cpus/4)
		s.rec = newRecorder(dir, start.UnixMilli(), pid, writers, queueRecords, queueBytes, rotateBytes, rotateAfter)
	}

	srv := &fasthttp.Server{
		Handler:                       s.handle,
		ErrorHandler:                  errorHandler,
		Name:                          "",
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		MaxRequestBodySize:            maxBody,
		ReadBufferSize:                8 << 10,
		WriteBufferSize:               4 << 10,
		ReadTimeout:                   30 * time.Second,
		WriteTimeout:                  10 * time.Second,
		IdleTimeout:                   120 * time.Second,
		CloseOnShutdown:               true,
		SecureErrorLogMessage:         true,
		Logger:                        &rateLogger{},
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		slog.Error("listen", "err", err)
		os.Exit(1)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	slog.Info("blackhole listening", "addr", ln.Addr().String(), "gomaxprocs", cpus,
		"record", record, "dir", dir, "writers", writers,
		"queue_records", queueRecords, "queue_bytes", queueBytes,
		"rotate_bytes", rotateBytes, "rotate_seconds", rotateAfter.Seconds())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case got := <-sig:
		slog.Info("shutting down", "signal", got.String())
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
		}
	case err := <-serveErr:
		slog.Error("server stopped", "err", err)
		os.Exit(1)
	}
	time.AfterFunc(shutdownBudget, func() {
		slog.Error("shutdown took too long")
		os.Exit(1)
	})

	// Stop accepting, let requests in flight finish (at most ~2 s).
	ctx, cancel := context.WithTimeout(context.Background(), shutdownInFlight)
	if err := srv.ShutdownWithContext(ctx); err != nil {
		slog.Warn("connections still open after the in-flight window", "err", err)
	}
	cancel()
	if s.rec != nil {
		// Refuse anything still arriving, wait for handlers that are
		// handing a record over (the writers keep draining), then write
		// everything queued and finalise every file.
		s.stopped.Store(true)
		for s.inflight.Load() != 0 {
			time.Sleep(time.Millisecond)
		}
		s.rec.close()
	}
	slog.Info("stopped", "uptime_s", time.Since(start).Seconds())
	os.Exit(0)
}
