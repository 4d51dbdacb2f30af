//! notes-grpc server: the Noticeboard service on tonic.
//!
//! Environment: HOST (default 127.0.0.1), PORT (required), NOTES_FILE
//! (required), LANGBENCH_CPUS (tokio worker threads; default: the CPUs
//! available), RUST_LOG (a level: error, warn, info, debug, trace; default
//! info). Stops gracefully on SIGTERM or SIGINT, with a bounded grace period.

use std::env;
use std::error::Error;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracing::level_filters::LevelFilter;
use tracing::{error, info, warn};

use notes_grpc::pb::noticeboard_server::{Noticeboard, NoticeboardServer};
use notes_grpc::pb::{Author, Note, Title};
use notes_grpc::store::NoteStore;

/// How long in-flight calls may take to finish after a stop signal.
const GRACE_PERIOD: Duration = Duration::from_secs(3);

type BoxError = Box<dyn Error + Send + Sync>;

struct Board {
    store: Arc<NoteStore>,
}

/// The notes of one author, yielded one by one as the stream is polled.
struct AuthorNotes {
    notes: Option<Arc<[Note]>>,
    next: usize,
}

impl Iterator for AuthorNotes {
    type Item = Result<Note, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        let note = self.notes.as_ref()?.get(self.next)?.clone();
        self.next += 1;
        Some(Ok(note))
    }
}

#[tonic::async_trait]
impl Noticeboard for Board {
    async fn get_note_by_title(&self, request: Request<Title>) -> Result<Response<Note>, Status> {
        let title = request.into_inner().title;
        match self.store.by_title(&title) {
            Some(note) => Ok(Response::new(note.clone())),
            None => Err(Status::not_found(format!("no note titled {title:?}"))),
        }
    }

    type ListNotesByAuthorStream = tokio_stream::Iter<AuthorNotes>;

    async fn list_notes_by_author(
        &self,
        request: Request<Author>,
    ) -> Result<Response<Self::ListNotesByAuthorStream>, Status> {
        let mail = request.into_inner().mail;
        let notes = AuthorNotes {
            notes: self.store.by_mail(&mail),
            next: 0,
        };
        Ok(Response::new(tokio_stream::iter(notes)))
    }
}

struct Config {
    host: String,
    port: u16,
    notes_file: PathBuf,
    workers: usize,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let host = env::var("HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = env::var("PORT")
            .map_err(|_| "PORT is not set".to_owned())?
            .parse::<u16>()
            .map_err(|e| format!("PORT is not a port number: {e}"))?;
        let notes_file = env::var_os("NOTES_FILE")
            .map(PathBuf::from)
            .ok_or_else(|| "NOTES_FILE is not set".to_owned())?;
        let workers = match env::var("LANGBENCH_CPUS") {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<NonZeroUsize>()
                .map_err(|e| format!("LANGBENCH_CPUS is not a positive integer: {e}"))?
                .get(),
            _ => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        };
        Ok(Config {
            host,
            port,
            notes_file,
            workers,
        })
    }
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

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            error!("configuration: {e}");
            return ExitCode::FAILURE;
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .thread_name("notes-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    let result = runtime.block_on(run(config));
    // Do not wait for anything still running after the grace period.
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

async fn run(config: Config) -> Result<(), BoxError> {
    let started = Instant::now();
    let store = NoteStore::load(&config.notes_file)
        .map_err(|e| format!("{}: {e}", config.notes_file.display()))?;
    info!(
        notes = store.len(),
        authors = store.authors(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded {}",
        config.notes_file.display()
    );

    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    let local = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    let service = NoticeboardServer::new(Board {
        store: Arc::new(store),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut server = tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );
    info!(workers = config.workers, "listening on {local}");

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
    match tokio::time::timeout(GRACE_PERIOD, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("server failed while stopping: {e}").into()),
        Ok(Err(e)) => Err(format!("server task failed while stopping: {e}").into()),
        Err(_) => {
            warn!("grace period elapsed; closing the remaining connections");
            Ok(())
        }
    }
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
