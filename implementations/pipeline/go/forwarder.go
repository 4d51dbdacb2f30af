package main

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	pb "langbench/pipeline/pipelinepb"
)

const (
	// Reconnection: grpc-go's own connection backoff is capped below the
	// contract's 100 ms, and a slot waits retryPause between two streams so
	// that a peer ending streams at once is not hammered.
	reconnectMaxDelay = 80 * time.Millisecond
	retryPause        = 20 * time.Millisecond
	// HTTP/2 flow-control windows of the node-to-node connections (client
	// and server side): large enough that 1 KiB operations stream without
	// waiting for WINDOW_UPDATEs; backpressure comes from the in-flight
	// limit, which stops a node reading its streams.
	streamWindow = 1 << 20
	connWindow   = 4 << 20
)

// ackSink receives the acknowledgement of an operation: a waiting HTTP
// request on node a, the upstream session the operation came in on on node b.
type ackSink interface {
	deliver(ack *pb.Ack)
}

// pendingOp is an operation sent (or to be sent) to the next node and not yet
// acknowledged, with everything waiting for its acknowledgement. Copies of an
// id submitted while it is pending wait for the same acknowledgement (C
// answers every copy with the digest committed first anyway).
type pendingOp struct {
	op    *pb.Op
	first ackSink
	more  []ackSink
	acked atomic.Bool // set under the slot lock; read by the sender to skip
}

// forwarder keeps the operations a node holds until the next node
// acknowledged them. Operations are spread over a fixed number of slots by a
// hash of their id; each slot owns one long-lived Forward stream (all on one
// HTTP/2 connection), its pending operations and its send queue, so no lock
// is shared between slots. When a slot's stream fails or ends, the slot opens
// a new one and sends every pending operation again.
type forwarder struct {
	target string
	conn   *grpc.ClientConn
	client pb.StageClient
	slots  []*slot
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	log    *slog.Logger
}

type slot struct {
	f       *forwarder
	index   int
	mu      sync.Mutex
	pending map[string]*pendingOp
	queue   []*pendingOp  // to be sent on the current stream
	wake    chan struct{} // capacity 1: "the queue may have grown"
	lastLog time.Time     // rate limit of the slot's stream error log
	muted   int           // stream errors not logged since lastLog
}

func newForwarder(target string, streams, maxInflight int, log *slog.Logger) (*forwarder, error) {
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  20 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   reconnectMaxDelay,
			},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
	)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &forwarder{
		target: target,
		conn:   conn,
		client: pb.NewStageClient(conn),
		cancel: cancel,
		log:    log.With("next", target),
	}
	perSlot := maxInflight/streams + 1
	for i := range streams {
		s := &slot{
			f:       f,
			index:   i,
			pending: make(map[string]*pendingOp, perSlot),
			queue:   make([]*pendingOp, 0, perSlot),
			wake:    make(chan struct{}, 1),
		}
		f.slots = append(f.slots, s)
	}
	for _, s := range f.slots {
		f.wg.Add(1)
		go s.run(ctx)
	}
	return f, nil
}

// submit hands an operation over until it is acknowledged; sink gets the
// acknowledgement. It reports false once the forwarder is closed. The
// forwarder owns op from now on (it is sent again after a reconnection and
// must not change).
func (f *forwarder) submit(op *pb.Op, sink ackSink) bool {
	if f.closed.Load() {
		return false
	}
	s := f.slots[slotIndex(op.Id, len(f.slots))]
	s.mu.Lock()
	if p, ok := s.pending[op.Id]; ok {
		p.more = append(p.more, sink)
		s.mu.Unlock()
		return true
	}
	p := &pendingOp{op: op, first: sink}
	s.pending[op.Id] = p
	s.queue = append(s.queue, p)
	s.mu.Unlock()
	s.notify()
	return true
}

// close stops every stream; what is still pending is dropped.
func (f *forwarder) close() {
	f.closed.Store(true)
	f.cancel()
	f.wg.Wait()
	f.conn.Close()
}

// slotIndex spreads ids over the slots by their FNV-1a hash; every copy of
// an id goes to the same slot.
func slotIndex(id string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

func (s *slot) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run keeps one stream open to the next node for as long as the node runs.
func (s *slot) run(ctx context.Context) {
	defer s.f.wg.Done()
	for {
		err := s.attempt(ctx)
		if ctx.Err() != nil {
			return
		}
		s.logStreamError(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryPause):
		}
	}
}

// attempt opens a stream (waiting until the next node is reachable; grpc-go
// retries the connection at least every reconnectMaxDelay), queues every
// pending operation on it, and serves it until it fails or ends.
func (s *slot) attempt(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.f.client.Forward(sctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if n := s.requeue(); n > 0 {
		s.f.log.Info("stream open, resending pending operations", "slot", s.index, "ops", n)
	}
	errc := make(chan error, 2)
	go func() { errc <- s.recvLoop(stream) }()
	go func() { errc <- s.sendLoop(sctx, stream) }()
	err = <-errc
	cancel()
	<-errc
	return err
}

// requeue makes every pending operation the send queue of a new stream.
func (s *slot) requeue() int {
	s.mu.Lock()
	clear(s.queue)
	s.queue = s.queue[:0]
	for _, p := range s.pending {
		s.queue = append(s.queue, p)
	}
	n := len(s.queue)
	s.mu.Unlock()
	s.notify()
	return n
}

// sendLoop sends the queued operations, a batch at a time (the queue is
// swapped out under the lock and sent without it). Send blocks while the
// next node's flow-control window is full.
func (s *slot) sendLoop(ctx context.Context, stream pb.Stage_ForwardClient) error {
	var batch []*pendingOp
	for {
		s.mu.Lock()
		batch, s.queue = s.queue, batch[:0]
		s.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-s.wake:
				// Let the goroutines that are ready to submit run first, so
				// that one batch (and one write by the transport) carries
				// what they add.
				runtime.Gosched()
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, p := range batch {
			if p.acked.Load() {
				continue // acknowledged meanwhile (an earlier copy reached C)
			}
			if err := stream.Send(p.op); err != nil {
				clear(batch)
				return err
			}
		}
		clear(batch)
	}
}

func (s *slot) recvLoop(stream pb.Stage_ForwardClient) error {
	for {
		ack, err := stream.Recv()
		if err != nil {
			return err
		}
		// Acknowledgements come back on the stream the operation went out
		// on; looking the id's slot up again also copes with a next node
		// that answers on another stream.
		s.f.slots[slotIndex(ack.Id, len(s.f.slots))].ack(ack)
	}
}

// ack completes the pending operation of ack.Id; an acknowledgement for an
// id the slot no longer waits for is dropped.
func (s *slot) ack(ack *pb.Ack) {
	s.mu.Lock()
	p, ok := s.pending[ack.Id]
	if ok {
		delete(s.pending, ack.Id)
		p.acked.Store(true)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	p.first.deliver(ack)
	for _, sink := range p.more {
		sink.deliver(ack)
	}
}

// logStreamError logs a lost stream at most once a second per slot.
func (s *slot) logStreamError(err error) {
	now := time.Now()
	if now.Sub(s.lastLog) < time.Second {
		s.muted++
		return
	}
	s.mu.Lock()
	pending := len(s.pending)
	s.mu.Unlock()
	s.f.log.Warn("stream to next node ended, reconnecting", "slot", s.index, "err", err,
		"pending", pending, "not_logged_since", s.muted)
	s.lastLog, s.muted = now, 0
}
