// Command server is the events-kafka service: POST /fire/{id} with a JSON
// body {"reason": "<text>"} produces the event {"id":<id>,"reason":"<text>"}
// to a Kafka topic, keyed by the decimal id, and answers 200 once the broker
// has acknowledged the write (503 if it has not within 5 s).
//
// Environment: HOST (default 127.0.0.1), PORT (default 8080), KAFKA_BOOTSTRAP
// (comma-separated host:port list, default 127.0.0.1:9092), KAFKA_TOPIC
// (default testing-topic), LANGBENCH_CPUS (number of CPUs to use; default:
// the runtime's choice, i.e. the CPUs available).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

const (
	// deliveryTimeout bounds how long a request waits for the broker's
	// acknowledgement before it is answered 503 (the contract's deadline).
	deliveryTimeout = 5 * time.Second
	// lingerTime is the producer's batching delay. The contract fixes 0 for
	// every implementation: a record is sent at once, and records that arrive
	// while a produce request is in flight form the next batch.
	lingerTime time.Duration = 0
	// shutdownBudget bounds the whole graceful shutdown (the harness allows
	// 5 s between SIGTERM and exit).
	shutdownBudget = 4 * time.Second
)

func getenv(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// newProducer builds the Kafka client with the producer settings the
// scenario's contract fixes for every implementation. It does not contact
// the broker: connections and metadata are established on first produce.
func newProducer(brokers []string, topic string) (*kgo.Client, error) {
	return kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ClientID("langbench-events-kafka-go"),
		kgo.RequiredAcks(kgo.LeaderAck()),                 // acks=1
		kgo.DisableIdempotentWrite(),                      // no idempotence (also required by acks=1)
		kgo.ProducerBatchCompression(kgo.NoCompression()), // no compression
		kgo.ProducerLinger(lingerTime),                    // linger 0: send at once
		kgo.RecordDeliveryTimeout(deliveryTimeout),        // delivery timeout 5 s, no retries beyond it
		// The client logs through slog at warn and above (connection and
		// metadata trouble), never per record.
		kgo.WithLogger(kslog.New(slog.New(slog.NewTextHandler(os.Stderr,
			&slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "kafka"))),
	)
}

func run(log *slog.Logger) error {
	if v := os.Getenv("LANGBENCH_CPUS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("LANGBENCH_CPUS must be a positive integer, got %q", v)
		}
		runtime.GOMAXPROCS(n)
	}

	topic := getenv("KAFKA_TOPIC", "testing-topic")
	var brokers []string
	for _, b := range strings.Split(getenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}

	cl, err := newProducer(brokers, topic)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}

	addr := net.JoinHostPort(getenv("HOST", "127.0.0.1"), getenv("PORT", "8080"))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		cl.Close()
		return err
	}

	h := &fireHandler{producer: cl, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fire/{id}", h.ServeHTTP)

	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      deliveryTimeout + 5*time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("serving",
		"addr", lis.Addr().String(),
		"bootstrap", strings.Join(brokers, ","),
		"topic", topic,
		"gomaxprocs", runtime.GOMAXPROCS(0))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serveErr:
		cl.Close()
		return err
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
	}

	// Stop accepting, let in-flight requests finish (each waits for its
	// acknowledgement), flush whatever the producer still holds, then close
	// the client, which fails anything left (those requests answer 503).
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel()
	shutdownErr := srv.Shutdown(ctx)
	if err := cl.Flush(ctx); err != nil {
		log.Warn("producer flush incomplete", "err", err)
	}
	cl.Close()
	if shutdownErr != nil {
		log.Warn("shutdown budget over, closing connections", "err", shutdownErr)
		srv.Close()
	}
	log.Info("stopped")
	return nil
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("server failed", "err", err)
		os.Exit(1)
	}
}
