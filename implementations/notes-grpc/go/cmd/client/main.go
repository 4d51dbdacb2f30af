// Command client runs the notes-grpc conformance sequence (hit, miss,
// stream) against any Noticeboard server and prints one JSON verdict on
// stdout. It exits 0 only when every check passes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "langbench/notes-grpc/notespb"
)

// callTimeout is the deadline of each RPC of the sequence.
const callTimeout = 5 * time.Second

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

type verdict struct {
	Client string  `json:"client"`
	Target string  `json:"target"`
	OK     bool    `json:"ok"`
	Checks []check `json:"checks"`
}

func pass(name, detail string) check { return check{Name: name, OK: true, Detail: detail} }
func fail(name, detail string) check { return check{Name: name, OK: false, Detail: detail} }

func checkHit(c pb.NoticeboardClient) check {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	note, err := c.GetNoteByTitle(ctx, &pb.Title{Title: "Hello"})
	if err != nil {
		return fail("hit", fmt.Sprintf("GetNoteByTitle(\"Hello\") failed: %v", err))
	}
	got := [4]string{note.GetTitle(), note.GetAuthor().GetNickname(), note.GetAuthor().GetMail(), note.GetContent()}
	want := [4]string{"Hello", "Hans", "hans@gmail.com", "Hello, world of notes."}
	if got != want {
		return fail("hit", fmt.Sprintf("got (title, nickname, mail, content) %q, want %q", got, want))
	}
	return pass("hit", "GetNoteByTitle(\"Hello\") returned the expected note")
}

func checkMiss(c pb.NoticeboardClient) check {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	note, err := c.GetNoteByTitle(ctx, &pb.Title{Title: "no such note"})
	if err == nil {
		return fail("miss", fmt.Sprintf("expected NOT_FOUND, got a note titled %q", note.GetTitle()))
	}
	if code := status.Code(err); code != codes.NotFound {
		return fail("miss", fmt.Sprintf("expected NOT_FOUND, got %v: %v", code, err))
	}
	return pass("miss", "GetNoteByTitle(\"no such note\") answered NOT_FOUND")
}

func checkStream(c pb.NoticeboardClient) check {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := c.ListNotesByAuthor(ctx, &pb.Author{Mail: "hans@gmail.com"})
	if err != nil {
		return fail("stream", fmt.Sprintf("ListNotesByAuthor failed: %v", err))
	}
	var titles []string
	for {
		note, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail("stream", fmt.Sprintf("stream ended with %v after titles %q", err, titles))
		}
		titles = append(titles, note.GetTitle())
	}
	want := []string{"Hello", "Goodbye"}
	if !slices.Equal(titles, want) {
		return fail("stream", fmt.Sprintf("got titles %q, want %q", titles, want))
	}
	return pass("stream", fmt.Sprintf("ListNotesByAuthor(\"hans@gmail.com\") streamed %q and ended OK", titles))
}

func main() {
	target := flag.String("target", "", "server address HOST:PORT")
	flag.Parse()
	if *target == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: client --target HOST:PORT")
		os.Exit(2)
	}

	v := runChecks(*target)
	out, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "encode verdict:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
	if !v.OK {
		os.Exit(1)
	}
}

// runChecks runs the fixed sequence; a connection failure fails the checks
// (the calls answer UNAVAILABLE), it does not abort the client.
func runChecks(target string) verdict {
	v := verdict{Client: "go", Target: target}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		for _, name := range []string{"hit", "miss", "stream"} {
			v.Checks = append(v.Checks, fail(name, fmt.Sprintf("cannot create client: %v", err)))
		}
		return v
	}
	defer conn.Close()
	c := pb.NewNoticeboardClient(conn)
	v.Checks = []check{checkHit(c), checkMiss(c), checkStream(c)}
	v.OK = true
	for _, ch := range v.Checks {
		v.OK = v.OK && ch.OK
	}
	return v
}
