package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	pb "langbench/pipeline/pipelinepb"
)

const (
	// After SIGTERM node a waits this long for what it holds to be
	// acknowledged and answered, then answers 503 to the rest.
	entryDrain = 4 * time.Second
	// then waits at most this long for those 503s to be written.
	entryGiveUpGrace = 400 * time.Millisecond
)

// entry is node a: POST /op/{id} -> dA -> forwarded to b; answered 200 with
// dC once c acknowledged the operation.
type entry struct {
	fwd        *forwarder
	permits    chan struct{} // one per request held, from its body to its answer
	rounds     int
	maxPayload int64
	giveUp     chan struct{} // closed when the shutdown drain window is over
	active     atomic.Int64  // handlers holding a permit
}

// replyChan receives the acknowledgement of one request (capacity 1: the
// forwarder delivers exactly once per submit).
type replyChan chan *pb.Ack

func (c replyChan) deliver(ack *pb.Ack) { c <- ack }

func (e *entry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "3")
		io.WriteString(w, "ok\n")
		return
	}
	if len(path) < len("/op/") || path[:len("/op/")] != "/op/" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	id := path[len("/op/"):]
	if !validID(id) {
		http.Error(w, "invalid operation id", http.StatusBadRequest)
		return
	}
	if r.ContentLength > e.maxPayload {
		// nothing read, nothing forwarded; net/http discards a small
		// unread body to keep the connection, or closes it
		http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
		return
	}

	// At the in-flight limit, stop taking bodies.
	select {
	case e.permits <- struct{}{}:
	case <-e.giveUp:
		e.unavailable(w)
		return
	}
	e.active.Add(1)
	defer func() {
		<-e.permits
		e.active.Add(-1)
	}()

	payload, status := e.readBody(w, r)
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	dA := entryDigest(id, payload, e.rounds)
	reply := make(replyChan, 1)
	if !e.fwd.submit(&pb.Op{Id: id, Payload: payload, Digest: dA[:]}, reply) {
		e.unavailable(w)
		return
	}
	// The operation stays held until it is acknowledged, even when the
	// client hangs up: nothing is abandoned half-way.
	var ack *pb.Ack
	select {
	case ack = <-reply:
	case <-e.giveUp:
		e.unavailable(w)
		return
	}
	if len(ack.Digest) != sha256.Size {
		http.Error(w, "bad acknowledgement from the pipeline", http.StatusBadGateway)
		return
	}
	body := hexDigest(ack.Digest)
	h := w.Header()
	h["Content-Type"] = []string{"text/plain"}
	h["Content-Length"] = []string{"64"}
	w.Write(body[:])
}

// readBody reads the whole payload (at most maxPayload bytes); status is
// non-zero when it cannot.
func (e *entry) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int) {
	if r.ContentLength >= 0 {
		payload := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, payload); err != nil {
			return nil, http.StatusBadRequest
		}
		return payload, 0
	}
	// chunked: read up to the limit
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.maxPayload))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, http.StatusRequestEntityTooLarge
		}
		return nil, http.StatusBadRequest
	}
	return payload, 0
}

func (e *entry) unavailable(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.Error(w, "shutting down", http.StatusServiceUnavailable)
}

// runEntry is node a.
func runEntry(cfg *config, log *slog.Logger) error {
	fwd, err := newForwarder(cfg.next, cfg.streams, cfg.maxInflight, log)
	if err != nil {
		return err
	}
	e := &entry{
		fwd:        fwd,
		permits:    make(chan struct{}, cfg.maxInflight),
		rounds:     cfg.rounds,
		maxPayload: cfg.maxPayload,
		giveUp:     make(chan struct{}),
	}
	srv := &http.Server{
		Handler:                      e,
		ReadHeaderTimeout:            10 * time.Second,
		IdleTimeout:                  120 * time.Second,
		MaxHeaderBytes:               64 << 10,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := listen(cfg.addr)
	if err != nil {
		fwd.close()
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "next", cfg.next,
		"gomaxprocs", runtime.GOMAXPROCS(0), "max_inflight", cfg.maxInflight,
		"streams", cfg.streams)
	if err := waitForSignal(log, serveErr); err != nil {
		fwd.close()
		return err
	}

	// Stop accepting; requests held finish as their acknowledgements come.
	ctx, cancel := context.WithTimeout(context.Background(), entryDrain)
	err = srv.Shutdown(ctx)
	cancel()
	if err != nil {
		log.Warn("drain window over, answering 503 to what is left", "held", e.active.Load())
		close(e.giveUp)
		deadline := time.Now().Add(entryGiveUpGrace)
		for e.active.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		srv.Close()
	}
	fwd.close()
	return nil
}
