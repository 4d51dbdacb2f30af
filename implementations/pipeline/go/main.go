// Command pipeline is the Go implementation of langbench's pipeline scenario
// (scenarios/pipeline/README.md): one binary that plays node a (HTTP/1.1
// entry), b (relay) or c (commit to the ledger), chosen by LANGBENCH_NODE.
// The nodes talk over the pipeline.Stage gRPC service
// (scenarios/pipeline/pipeline.proto).
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"
)

// shutdownWatchdog bounds the whole shutdown (the harness allows 5 s): if a
// node is still stopping then, something is stuck and it exits with 1.
const shutdownWatchdog = 4800 * time.Millisecond

// GC settings of nodes a and b when the environment sets none (see tuneGC).
const (
	gcPercent   = 400
	memoryLimit = 256 << 20
)

// tuneGC raises GOGC on nodes a and b. Their live heap is bounded by what
// MAX_INFLIGHT operations hold (a few MiB at 1 KiB payloads) while every
// operation allocates a few KiB (request, messages, buffers), so with the
// default GOGC=100 the collector runs many times a second. GOGC=400 lets the
// heap grow to 5x the live heap between cycles; the soft memory limit keeps
// the worst case (MAX_INFLIGHT x MAX_PAYLOAD, about 130 MiB live) from
// growing the heap past 256 MiB (the collector then runs as with GOGC of
// about 100). GOGC / GOMEMLIMIT in the environment override either.
// Node c keeps the defaults: its live heap (the committed-id set) grows with
// the ledger, and a proportional GOGC would multiply that.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
}

type config struct {
	node        string // "a", "b" or "c"
	addr        string // HOST:PORT to listen on
	next        string // a and b: host:port of the next node
	rounds      int    // SHA-256 rounds per node
	maxInflight int    // operations a node may hold at once
	maxPayload  int64  // largest body node a accepts
	ledgerFile  string // c: the ledger
	cpus        int    // GOMAXPROCS (0: runtime default)
	streams     int    // a and b: Forward streams opened to the next node
}

func envString(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func envInt(key string, def, min int) (int, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min {
		return 0, fmt.Errorf("%s must be an integer >= %d, got %q", key, min, v)
	}
	return n, nil
}

func loadConfig() (*config, error) {
	c := &config{node: os.Getenv("LANGBENCH_NODE")}
	switch c.node {
	case "a", "b", "c":
	default:
		return nil, fmt.Errorf("LANGBENCH_NODE must be a, b or c, got %q", c.node)
	}
	port := os.Getenv("PORT")
	if port == "" {
		return nil, errors.New("PORT is not set")
	}
	c.addr = net.JoinHostPort(envString("HOST", "127.0.0.1"), port)
	if c.node != "c" {
		if c.next = os.Getenv("NEXT"); c.next == "" {
			return nil, errors.New("NEXT is not set")
		}
	}
	if c.node == "c" {
		if c.ledgerFile = os.Getenv("LEDGER_FILE"); c.ledgerFile == "" {
			return nil, errors.New("LEDGER_FILE is not set")
		}
	}
	var err error
	if c.rounds, err = envInt("ROUNDS", 100, 1); err != nil {
		return nil, err
	}
	if c.maxInflight, err = envInt("MAX_INFLIGHT", 2000, 1); err != nil {
		return nil, err
	}
	maxPayload, err := envInt("MAX_PAYLOAD", 65536, 0)
	if err != nil {
		return nil, err
	}
	c.maxPayload = int64(maxPayload)
	if c.cpus, err = envInt("LANGBENCH_CPUS", 0, 1); err != nil {
		return nil, err
	}
	if c.streams, err = envInt("PIPELINE_STREAMS", 4, 1); err != nil {
		return nil, err
	}
	return c, nil
}

// listen binds the node's address; a restarted node binds the port its
// predecessor left (Go sets SO_REUSEADDR on listeners).
func listen(addr string) (net.Listener, error) {
	return net.Listen("tcp", addr)
}

// stopSignals gets SIGTERM/SIGINT from the start of main on; the handler
// stays installed, so a second signal during the shutdown is ignored rather
// than killing the node half-way.
var stopSignals = make(chan os.Signal, 1)

// waitForSignal blocks until SIGTERM/SIGINT (nil) or until serving fails.
func waitForSignal(log *slog.Logger, serveErr <-chan error) error {
	var sig os.Signal
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case sig = <-stopSignals:
	}
	log.Info("shutting down", "signal", sig.String())
	time.AfterFunc(shutdownWatchdog, func() {
		log.Error("shutdown took too long, exiting", "budget", shutdownWatchdog.String())
		os.Exit(1)
	})
	return nil
}

func main() {
	signal.Notify(stopSignals, syscall.SIGTERM, syscall.SIGINT)
	cfg, err := loadConfig()
	if err != nil {
		slog.New(slog.NewTextHandler(os.Stderr, nil)).Error("bad configuration", "err", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", cfg.node)
	if cfg.cpus > 0 {
		runtime.GOMAXPROCS(cfg.cpus)
	}
	if cfg.node != "c" {
		tuneGC()
	}

	switch cfg.node {
	case "a":
		err = runEntry(cfg, log)
	case "b":
		err = runRelay(cfg, log)
	case "c":
		err = runCommit(cfg, log)
	}
	if err != nil {
		log.Error("node failed", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}
