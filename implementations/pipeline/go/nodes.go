package main

import (
	"log/slog"
	"time"

	pb "langbench/pipeline/pipelinepb"
)

const (
	// b: after SIGTERM, how long streams may stay open for what b holds to
	// be acknowledged by c and relayed (contract: up to 3 s).
	relayDrain = 3 * time.Second
	// c: after SIGTERM, how long streams may stay open while c commits and
	// acknowledges what it holds (its syncs take milliseconds).
	commitDrain = 3500 * time.Millisecond
)

// runRelay is node b: dB = T(dA), forwarded to c; c's acknowledgements are
// relayed on the stream the operation came in on.
func runRelay(cfg *config, log *slog.Logger) error {
	fwd, err := newForwarder(cfg.next, cfg.streams, cfg.maxInflight, log)
	if err != nil {
		return err
	}
	rounds := cfg.rounds
	st := newStage(cfg.maxInflight, func(op *pb.Op, s *session) {
		d := transform(op.Digest, rounds)
		op.Digest = d[:] // the received message goes on, payload unchanged
		if !fwd.submit(op, s) {
			s.drop()
		}
	})
	ln, err := listen(cfg.addr)
	if err != nil {
		return err
	}
	err = serveStage(ln, grpcServer(st), st, relayDrain, log)
	fwd.close()
	return err
}

// runCommit is node c: dC = T(dB), committed once to the ledger, and
// acknowledged once durable.
func runCommit(cfg *config, log *slog.Logger) error {
	l, err := openLedger(cfg.ledgerFile, cfg.maxInflight, log)
	if err != nil {
		return err
	}
	go l.run()
	rounds := cfg.rounds
	st := newStage(cfg.maxInflight, func(op *pb.Op, s *session) {
		l.submit(commitReq{id: op.Id, digest: transform(op.Digest, rounds), to: s})
	})
	ln, err := listen(cfg.addr)
	if err != nil {
		return err
	}
	err = serveStage(ln, grpcServer(st), st, commitDrain, log)
	if cerr := l.stop(); err == nil {
		err = cerr
	}
	return err
}
