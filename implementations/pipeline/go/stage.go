package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	pb "langbench/pipeline/pipelinepb"
)

// stage serves pipeline.Stage on nodes b and c. Each Forward stream is a
// session: a goroutine reads operations (only while the node holds fewer
// than MAX_INFLIGHT, so at the limit HTTP/2 flow control pushes back
// upstream) and runs the CPU-bound transform and the hand-over (to the
// forwarder on b, the ledger on c) itself, one operation after the other;
// the handler goroutine writes the acknowledgements back on the same stream.
//
// No goroutine per operation: the reader takes every operation already
// received before it blocks, so the goroutine it hands over to (the
// forwarder's sender, the committer) wakes once for a whole batch, and the
// transport writes that batch with one write(2). Transforms run in parallel
// across streams (the upstream node opens several).
type stage struct {
	pb.UnimplementedStageServer

	// permits holds one token per operation held, from receipt until its
	// acknowledgement is written upstream (or dropped).
	permits chan struct{}
	// process takes over a received operation, on the session's reader
	// goroutine: it must not block (the forwarder queues, the ledger's
	// channel has room for MAX_INFLIGHT); it ends in s.deliver(ack) or
	// s.drop().
	process func(op *pb.Op, s *session)

	draining  chan struct{} // closed when shutdown starts
	drainOnce sync.Once
	stopping  atomic.Bool
}

func newStage(maxInflight int, process func(*pb.Op, *session)) *stage {
	return &stage{
		permits:  make(chan struct{}, maxInflight),
		process:  process,
		draining: make(chan struct{}),
	}
}

// drain makes every session stop reading and end once everything it holds
// is acknowledged.
func (st *stage) drain() {
	st.drainOnce.Do(func() {
		st.stopping.Store(true)
		close(st.draining)
	})
}

func grpcServer(st *stage) *grpc.Server {
	srv := grpc.NewServer(
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		// Accept client keepalive pings every 5 s or more (grpc-go's
		// default minimum is 5 min), so that other languages' upstream
		// nodes with keepalive on are not sent GOAWAY too_many_pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
	)
	pb.RegisterStageServer(srv, st)
	return srv
}

// serveStage serves st on ln until SIGTERM/SIGINT, then drains: sessions
// stop reading, end once what they hold is acknowledged, and after grace
// the server is stopped hard.
func serveStage(ln net.Listener, srv *grpc.Server, st *stage, grace time.Duration, log *slog.Logger) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "gomaxprocs", runtime.GOMAXPROCS(0),
		"max_inflight", cap(st.permits))
	if err := waitForSignal(log, serveErr); err != nil {
		return err
	}
	st.drain()
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		log.Warn("drain window over, closing the remaining streams", "grace", grace.String())
		srv.Stop()
		<-stopped
	}
	return nil
}

// session is one Forward stream served by this node.
type session struct {
	st     *stage
	stream pb.Stage_ForwardServer

	mu     sync.Mutex
	acks   []*pb.Ack // to be written upstream
	closed bool      // the stream ended: acknowledgements are dropped
	wake   chan struct{}

	// operations received on this stream and not yet acknowledged on it
	outstanding atomic.Int64
}

func (st *stage) Forward(stream pb.Stage_ForwardServer) error {
	s := &session{st: st, stream: stream, wake: make(chan struct{}, 1)}
	recvEnded := make(chan error, 1)
	go func() { recvEnded <- s.recvLoop() }()
	err := s.sendLoop(recvEnded)
	s.close()
	return err
}

// recvLoop reads operations while the node is under its in-flight limit.
// It returns nil when the upstream node half-closed the stream or the node
// is draining (it stops reading), an error when the stream broke or an
// operation is malformed.
func (s *session) recvLoop() error {
	ctx := s.stream.Context()
	for {
		select {
		case s.st.permits <- struct{}{}:
		case <-ctx.Done():
			return nil
		case <-s.st.draining:
			return nil
		}
		op, err := s.stream.Recv()
		if err != nil {
			<-s.st.permits
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		s.outstanding.Add(1)
		if s.st.stopping.Load() {
			// Read after the drain started: not taken (the upstream node
			// sends it again once this stream ends).
			s.drop()
			return nil
		}
		if !validID(op.Id) {
			s.drop()
			return status.Errorf(codes.InvalidArgument, "invalid operation id %q", op.Id)
		}
		s.st.process(op, s)
	}
}

// sendLoop writes acknowledgements as they come, a batch at a time, until
// the stream breaks, or (after the upstream half-closed, or the node
// started draining) nothing received on the stream waits for its
// acknowledgement any more.
func (s *session) sendLoop(recvEnded <-chan error) error {
	ctx := s.stream.Context()
	draining := s.st.draining
	finishing := false
	var batch []*pb.Ack
	for {
		s.mu.Lock()
		batch, s.acks = s.acks, batch[:0]
		s.mu.Unlock()
		for i, ack := range batch {
			if err := s.stream.Send(ack); err != nil {
				s.release(len(batch) - i)
				clear(batch)
				return err
			}
			s.release(1)
		}
		clear(batch)
		if finishing && s.outstanding.Load() == 0 {
			return nil
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-draining:
			draining, finishing = nil, true
		case err := <-recvEnded:
			if err != nil {
				return err
			}
			recvEnded, finishing = nil, true
		}
	}
}

// deliver queues the acknowledgement of one operation received on s.
func (s *session) deliver(ack *pb.Ack) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.release(1)
		return
	}
	s.acks = append(s.acks, ack)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drop gives up one operation received on s without acknowledging it.
func (s *session) drop() { s.release(1) }

func (s *session) release(n int) {
	for range n {
		<-s.st.permits
	}
	s.outstanding.Add(-int64(n))
}

// close ends the session: queued and later acknowledgements are dropped
// (the upstream node sends those operations again on another stream).
func (s *session) close() {
	s.mu.Lock()
	s.closed = true
	n := len(s.acks)
	clear(s.acks)
	s.acks = nil
	s.mu.Unlock()
	s.release(n)
}
