package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	// maxReasonBytes is the contract's limit on the UTF-8 length of reason.
	maxReasonBytes = 1024
	// maxBodyBytes caps what is read of a request body: generous for a
	// 1 KiB reason (even fully \u-escaped) plus other, ignored members.
	maxBodyBytes = 64 << 10
	// failureLogInterval rate-limits the warning about failed deliveries.
	failureLogInterval = 10 * time.Second
)

// fireHandler serves POST /fire/{id}.
type fireHandler struct {
	producer *kgo.Client
	log      *slog.Logger

	lastFailureLog atomic.Int64 // unix nanos of the last failure warning
	failures       atomic.Int64 // failed deliveries since that warning
}

func (h *fireHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The id is an unsigned 64-bit decimal: ParseUint with base 10 accepts
	// digits only (no sign, no underscores) and rejects values over 2^64-1.
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "cannot read request body", http.StatusBadRequest)
		}
		return
	}
	reason, msg := parseReason(body)
	if msg != "" {
		http.Error(w, msg, http.StatusBadRequest)
		return
	}

	key := strconv.AppendUint(make([]byte, 0, 20), id, 10)
	rec := &kgo.Record{Key: key, Value: appendEvent(make([]byte, 0, 32+len(key)+len(reason)), key, reason)}

	// The deadline is detached from the client connection on purpose: with
	// franz-go the first record's context decides for its whole batch, so a
	// client hanging up must not cancel other requests' events.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), deliveryTimeout)
	defer cancel()
	if err := h.produce(ctx, rec); err != nil {
		h.deliveryFailed(err)
		http.Error(w, "event not acknowledged by the broker", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// produce hands rec to the producer and waits for the broker's
// acknowledgement, or for ctx to end, whichever comes first.
//
// With linger 0 (the contract's setting) the record's partition is drained
// at once; ProduceSync would also cut a linger short, so nothing here waits
// on one. Under concurrency records still batch up behind the produce
// request in flight. It runs in its own goroutine because franz-go fails a
// record whose context ended only at certain points (before a request is
// written, after a response): while it dials or waits on an unresponsive
// broker that can take far longer than the deadline, so the wait here is
// bounded by ctx itself. The channel is buffered: a late outcome never
// blocks.
func (h *fireHandler) produce(ctx context.Context, rec *kgo.Record) error {
	done := make(chan error, 1)
	go func() { done <- h.producer.ProduceSync(ctx, rec).FirstErr() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deliveryFailed logs failed deliveries at most once per failureLogInterval,
// with the number of failures since the previous warning.
func (h *fireHandler) deliveryFailed(err error) {
	n := h.failures.Add(1)
	now := time.Now().UnixNano()
	last := h.lastFailureLog.Load()
	if now-last < int64(failureLogInterval) || !h.lastFailureLog.CompareAndSwap(last, now) {
		return
	}
	h.failures.Add(-n)
	h.log.Warn("events not delivered, answering 503", "failures", n, "err", err)
}

// parseReason extracts the reason from a request body, which must be a JSON
// object with a string member "reason" (matched exactly; other members are
// ignored) of at most maxReasonBytes in UTF-8. On failure it returns the
// message for a 400 answer.
func parseReason(body []byte) (string, string) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil { // nil: the body was `null`
		return "", "body must be a JSON object"
	}
	raw, ok := obj["reason"]
	if !ok {
		return "", `missing "reason"`
	}
	var reason string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &reason) != nil {
		return "", `"reason" must be a string`
	}
	if len(reason) > maxReasonBytes {
		return "", `"reason" is longer than 1024 bytes`
	}
	return reason, ""
}

// appendEvent appends the event {"id":<id>,"reason":"<reason>"} as compact
// JSON. The reason is escaped minimally (quote, backslash, control
// characters; everything else verbatim UTF-8), which is the form serde_json
// and Python's json.dumps(ensure_ascii=False) write too, unlike
// encoding/json's HTML-safe escaping of <, > and &.
func appendEvent(dst, id []byte, reason string) []byte {
	dst = append(dst, `{"id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"reason":`...)
	dst = appendJSONString(dst, reason)
	return append(dst, '}')
}

func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
