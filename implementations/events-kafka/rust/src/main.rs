//! events-kafka server: `POST /fire/{id}` with `{"reason": "<text>"}` produces
//! the event `{"id":<id>,"reason":"<text>"}` to Kafka and answers 200 once the
//! broker acknowledged it (axum on tokio, rdkafka on librdkafka).
//!
//! Environment: HOST (default 127.0.0.1), PORT (required), KAFKA_BOOTSTRAP
//! (default 127.0.0.1:9092), KAFKA_TOPIC (default testing-topic),
//! LANGBENCH_CPUS (tokio worker threads; default: the CPUs available),
//! RUST_LOG (a level: error, warn, info, debug, trace; default info).
//! Stops gracefully on SIGTERM or SIGINT: stop accepting, let in-flight
//! requests finish (2.5 s; then purge what librdkafka still holds, so they
//! answer 503), flush the producer (at most 1 s), exit 0: within about 4 s.

mod body;

use std::env;
use std::error::Error;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::level_filters::LevelFilter;
use tracing::{debug, error, info, warn};

use crate::body::FireBody;

/// The contract's delivery deadline: no acknowledgement within it means 503.
/// librdkafka enforces it itself (`message.timeout.ms`).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Safety net above librdkafka's own deadline (it scans for expired messages
/// about once a second), so a request never waits much more than 6 s.
const ANSWER_DEADLINE: Duration = Duration::from_secs(6);
/// Longest accepted `reason`, in UTF-8 bytes.
const MAX_REASON_BYTES: usize = 1024;
/// How long in-flight requests may take to finish after a stop signal.
const GRACE_PERIOD: Duration = Duration::from_millis(2_500);
/// After the grace period, undelivered messages are purged (503) and their
/// requests get this long to answer.
const PURGE_GRACE: Duration = Duration::from_millis(500);
/// How long the producer may take to flush what is still queued on exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

type BoxError = Box<dyn Error + Send + Sync>;

/// The event written to Kafka; fields serialise in declaration order.
#[derive(Serialize)]
struct Event<'a> {
    id: u64,
    reason: &'a str,
}

#[derive(Clone)]
struct App {
    producer: FutureProducer<KafkaLog>,
    topic: std::sync::Arc<str>,
}

/// Routes librdkafka's log lines and global errors to tracing (stderr).
/// Errors such as "broker down" are repeated by librdkafka only at its
/// reconnect back-off, never per request.
struct KafkaLog;

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!("librdkafka {fac}: {message}"),
            RDKafkaLogLevel::Warning => warn!("librdkafka {fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!("librdkafka {fac}: {message}"),
            RDKafkaLogLevel::Debug => debug!("librdkafka {fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection failures are already logged by librdkafka itself (the
        // FAIL lines above, with identical repeats suppressed); the error
        // callback repeats them on every reconnect attempt.
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                debug!("kafka: {error}: {reason}")
            }
            _ => warn!("kafka: {error}: {reason}"),
        }
    }
}

/// `POST /fire/{id}`.
async fn fire(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> StatusCode {
    let Some(id) = id.ok().and_then(|Path(raw)| parse_id(&raw)) else {
        return StatusCode::NOT_FOUND;
    };
    let reason = match serde_json::from_slice::<FireBody>(&body) {
        Ok(FireBody { reason }) if reason.len() <= MAX_REASON_BYTES => reason,
        _ => return StatusCode::BAD_REQUEST,
    };

    let mut payload = Vec::with_capacity(reason.len() + 48);
    let event = Event {
        id,
        reason: &reason,
    };
    if serde_json::to_writer(&mut payload, &event).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let key = id.to_string();
    let record = FutureRecord::to(&app.topic)
        .key(key.as_bytes())
        .payload(payload.as_slice());

    // Enqueue without waiting: a full local queue means the broker is not
    // keeping up (or is down), which is a 503 now rather than later.
    let delivery = match app.producer.send_result(record) {
        Ok(delivery) => delivery,
        Err((e, _)) => {
            debug!("enqueue failed: {e}");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    };
    match tokio::time::timeout(ANSWER_DEADLINE, delivery).await {
        Ok(Ok(Ok(_))) => StatusCode::OK,
        Ok(Ok(Err((e, _)))) => {
            debug!("delivery failed: {e}");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Ok(Err(_canceled)) => StatusCode::SERVICE_UNAVAILABLE,
        Err(_elapsed) => {
            debug!("no delivery report within {ANSWER_DEADLINE:?}");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// A decimal u64: digits only (no sign, no spaces), in range.
fn parse_id(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

struct Config {
    host: String,
    port: u16,
    bootstrap: String,
    topic: String,
    workers: usize,
}

fn env_or(name: &str, default: &str) -> String {
    env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let port = env::var("PORT")
            .map_err(|_| "PORT is not set".to_owned())?
            .trim()
            .parse::<u16>()
            .map_err(|e| format!("PORT is not a port number: {e}"))?;
        let workers = match env::var("LANGBENCH_CPUS") {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<NonZeroUsize>()
                .map_err(|e| format!("LANGBENCH_CPUS is not a positive integer: {e}"))?
                .get(),
            _ => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        };
        Ok(Config {
            host: env_or("HOST", "127.0.0.1"),
            port,
            bootstrap: env_or("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topic: env_or("KAFKA_TOPIC", "testing-topic"),
            workers,
        })
    }
}

/// The producer, configured as the contract says (see langbench.toml).
fn producer(
    config: &Config,
    log_level: RDKafkaLogLevel,
) -> Result<FutureProducer<KafkaLog>, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("client.id", "langbench-events-kafka-rust")
        .set("acks", "1")
        .set("compression.type", "none")
        .set("enable.idempotence", "false")
        // The scenario fixes the same producer settings for every language:
        // linger 0 (send at once; records queued while a produce request
        // waits to be transmitted form the next batch). linger.ms is
        // librdkafka's alias of queue.buffering.max.ms: one setting.
        .set("linger.ms", "0")
        // The 5 s delivery deadline, retries included; a produce request
        // never waits longer than that either.
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set(
            "request.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("socket.nagle.disable", "true")
        // Come back quickly once the broker is reachable again.
        .set("reconnect.backoff.max.ms", "1000")
        .set_log_level(log_level)
        .create_with_context(KafkaLog)
}

fn main() -> ExitCode {
    let level = env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
    let kafka_level = match level {
        LevelFilter::TRACE | LevelFilter::DEBUG => RDKafkaLogLevel::Debug,
        LevelFilter::INFO => RDKafkaLogLevel::Notice,
        LevelFilter::WARN => RDKafkaLogLevel::Warning,
        _ => RDKafkaLogLevel::Error,
    };

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            error!("configuration: {e}");
            return ExitCode::FAILURE;
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .thread_name("events-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    let result = runtime.block_on(run(config, kafka_level));
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, kafka_level: RDKafkaLogLevel) -> Result<(), BoxError> {
    let producer = producer(&config, kafka_level).map_err(|e| format!("kafka producer: {e}"))?;
    let app = App {
        producer: producer.clone(),
        topic: config.topic.as_str().into(),
    };
    let router = Router::new()
        .route("/fire/{id}", post(fire))
        .with_state(app);

    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    let local = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            debug!("TCP_NODELAY: {e}");
        }
    });

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    info!(
        workers = config.workers,
        bootstrap = %config.bootstrap,
        topic = %config.topic,
        "listening on {local}"
    );

    tokio::select! {
        outcome = &mut server => {
            return match outcome {
                Ok(Ok(())) => Err("server stopped unexpectedly".into()),
                Ok(Err(e)) => Err(format!("server failed: {e}").into()),
                Err(e) => Err(format!("server task failed: {e}").into()),
            };
        }
        signal = stop_signal() => {
            info!("{}: stopping (grace period {:?})", signal?, GRACE_PERIOD);
        }
    }

    let _ = stop_tx.send(());
    // In-flight requests normally finish within milliseconds (each waits for
    // its own acknowledgement); only a broker in trouble holds them longer.
    let mut stopped = tokio::time::timeout(GRACE_PERIOD, &mut server).await.ok();
    if stopped.is_none() {
        // Fail what librdkafka still holds: the waiting requests get their
        // delivery error now and answer 503 instead of being cut off.
        warn!("grace period elapsed: purging undelivered messages (their requests answer 503)");
        let purger = producer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            purger.purge(PurgeConfig::default().queue().inflight())
        })
        .await;
        stopped = tokio::time::timeout(PURGE_GRACE, &mut server).await.ok();
    }
    match stopped {
        Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => warn!("server failed while stopping: {e}"),
        Some(Err(e)) => warn!("server task failed while stopping: {e}"),
        None => warn!("closing the remaining connections"),
    }

    // Flush whatever is still queued (normally nothing, see above).
    let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
    match flushed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("producer flush: {e}"),
        Err(e) => warn!("producer flush task: {e}"),
    }
    Ok(())
}

/// Resolves with the name of the first SIGTERM or SIGINT received.
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("007"), Some(7));
        assert_eq!(parse_id("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_id("18446744073709551616"), None);
        assert_eq!(parse_id("-1"), None);
        assert_eq!(parse_id("+1"), None);
        assert_eq!(parse_id(" 1"), None);
        assert_eq!(parse_id("abc"), None);
        assert_eq!(parse_id(""), None);
    }

    #[test]
    fn event_bytes() {
        let mut out = Vec::new();
        let reason = "a \"q\" \\ é\n\u{1}";
        serde_json::to_writer(
            &mut out,
            &Event {
                id: u64::MAX,
                reason,
            },
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"id\":18446744073709551615,\"reason\":\"a \\\"q\\\" \\\\ é\\n\\u0001\"}"
        );
    }
}
