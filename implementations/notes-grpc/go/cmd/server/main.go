// Command server serves the notes-grpc Noticeboard over gRPC.
//
// Environment: HOST (default 127.0.0.1), PORT (default 50051), NOTES_FILE
// (path to the scenario's notes.json, required), LANGBENCH_CPUS (number of
// CPUs to use; default: the runtime's choice, i.e. the CPUs available).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "langbench/notes-grpc/notespb"
)

// gracePeriod bounds how long in-flight RPCs may run after SIGTERM/SIGINT
// before the server is stopped hard (the harness allows 5 s in all).
const gracePeriod = 3 * time.Second

// noteJSON is one entry of the scenario's notes.json.
type noteJSON struct {
	Title   string `json:"title"`
	Content string `json:"content"`
	Author  struct {
		Nickname string `json:"nickname"`
		Mail     string `json:"mail"`
	} `json:"author"`
}

// noticeboard holds the notes in read-only in-memory indexes built at
// start-up, so handlers need no locking.
type noticeboard struct {
	pb.UnimplementedNoticeboardServer

	byTitle map[string]*pb.Note
	byMail  map[string][]*pb.Note // notes of each author, in file order
}

func loadNoticeboard(path string) (*noticeboard, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []noteJSON
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	nb := &noticeboard{
		byTitle: make(map[string]*pb.Note, len(entries)),
		byMail:  make(map[string][]*pb.Note),
	}
	for _, e := range entries {
		note := &pb.Note{
			Title:   e.Title,
			Content: e.Content,
			Author:  &pb.Author{Nickname: e.Author.Nickname, Mail: e.Author.Mail},
		}
		if _, dup := nb.byTitle[e.Title]; dup {
			return nil, fmt.Errorf("%s: duplicate title %q", path, e.Title)
		}
		nb.byTitle[e.Title] = note
		nb.byMail[e.Author.Mail] = append(nb.byMail[e.Author.Mail], note)
	}
	return nb, nil
}

func (nb *noticeboard) GetNoteByTitle(_ context.Context, req *pb.Title) (*pb.Note, error) {
	note, ok := nb.byTitle[req.GetTitle()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no note titled %q", req.GetTitle())
	}
	return note, nil
}

func (nb *noticeboard) ListNotesByAuthor(req *pb.Author, stream grpc.ServerStreamingServer[pb.Note]) error {
	for _, note := range nb.byMail[req.GetMail()] {
		if err := stream.Send(note); err != nil {
			return err
		}
	}
	return nil
}

func getenv(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func run(log *slog.Logger) error {
	if v := os.Getenv("LANGBENCH_CPUS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("LANGBENCH_CPUS must be a positive integer, got %q", v)
		}
		runtime.GOMAXPROCS(n)
	}

	notesFile := os.Getenv("NOTES_FILE")
	if notesFile == "" {
		return errors.New("NOTES_FILE is not set")
	}
	start := time.Now()
	nb, err := loadNoticeboard(notesFile)
	if err != nil {
		return fmt.Errorf("load notes: %w", err)
	}

	addr := net.JoinHostPort(getenv("HOST", "127.0.0.1"), getenv("PORT", "50051"))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}

	srv := grpc.NewServer()
	pb.RegisterNoticeboardServer(srv, nb)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("serving",
		"addr", lis.Addr().String(),
		"notes", len(nb.byTitle),
		"authors", len(nb.byMail),
		"gomaxprocs", runtime.GOMAXPROCS(0),
		"load_ms", time.Since(start).Milliseconds())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serveErr:
		return err
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
	}

	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(gracePeriod):
		log.Warn("grace period over, stopping hard", "grace", gracePeriod.String())
		srv.Stop()
	}
	return nil
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("server failed", "err", err)
		os.Exit(1)
	}
}
