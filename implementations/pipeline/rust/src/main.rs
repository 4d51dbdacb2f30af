//! langbench pipeline (scenarios/pipeline/README.md): one program that plays
//! node a, b or c, chosen by LANGBENCH_NODE.
//!
//! - a: HTTP/1.1 entry (hyper). `POST /op/{id}` computes dA, forwards the
//!   operation over long-lived gRPC streams to NEXT and answers 200 with C's
//!   digest once C has made it durable.
//! - b: gRPC `pipeline.Stage` server (tonic). Computes dB, forwards over its
//!   own long-lived streams to NEXT and relays C's acknowledgements back on
//!   the stream each operation came in on.
//! - c: gRPC `pipeline.Stage` server. Computes dC and hands the operation to
//!   the committer thread, which appends to the ledger, group-commits with
//!   one fdatasync per batch and only then acknowledges.
//!
//! Environment: HOST, PORT, LANGBENCH_NODE, NEXT (a and b), ROUNDS,
//! MAX_INFLIGHT, MAX_PAYLOAD, LEDGER_FILE (c), LANGBENCH_CPUS (tokio worker
//! threads), PIPELINE_STREAMS (streams to NEXT; default max(2, CPUs)).
//!
//! Every node stops on SIGTERM or SIGINT within 5 s with exit status 0 (the
//! per-node sequence is documented in each node's module).

mod digest;
mod forward;
mod ledger;
mod node_a;
mod node_b;
mod node_c;
mod stage;

use std::env;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use digest::Transform;

pub mod pb {
    tonic::include_proto!("pipeline");
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One line on stderr, prefixed with the node's name.
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("pipeline[{}]: {}", $crate::node_name(), format_args!($($arg)*))
    };
}
pub(crate) use log;

static NODE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

pub fn node_name() -> &'static str {
    NODE.get().copied().unwrap_or("?")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    A,
    B,
    C,
}

pub struct Config {
    pub role: Role,
    pub addr: SocketAddr,
    /// `host:port` of the next node (a and b).
    pub next: Option<String>,
    pub transform: Transform,
    pub max_inflight: usize,
    pub max_payload: usize,
    /// The ledger (c).
    pub ledger: Option<PathBuf>,
    pub cpus: usize,
    /// Long-lived Forward streams to NEXT (each on its own connection).
    pub streams: usize,
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn num<T: std::str::FromStr>(name: &str, default: Option<T>) -> Result<T, String> {
    match var(name) {
        Some(v) => v.parse().map_err(|_| format!("{name}={v:?} is not a valid number")),
        None => default.ok_or_else(|| format!("{name} is not set")),
    }
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let role = match var("LANGBENCH_NODE").as_deref() {
            Some("a") => Role::A,
            Some("b") => Role::B,
            Some("c") => Role::C,
            other => return Err(format!("LANGBENCH_NODE={other:?}: expected a, b or c")),
        };
        let host = var("HOST").unwrap_or_else(|| "127.0.0.1".into());
        let port: u16 = num("PORT", None)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("HOST={host}: {e}"))?
            .next()
            .ok_or_else(|| format!("HOST={host}: no address"))?;
        let next = match role {
            Role::A | Role::B => Some(var("NEXT").ok_or("NEXT is not set")?),
            Role::C => None,
        };
        let rounds: u32 = num("ROUNDS", Some(100))?;
        if rounds == 0 {
            return Err("ROUNDS must be at least 1".into());
        }
        let max_inflight: usize = num("MAX_INFLIGHT", Some(2000))?;
        if max_inflight == 0 || max_inflight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err("MAX_INFLIGHT must be at least 1".into());
        }
        let max_payload: usize = num("MAX_PAYLOAD", Some(65536))?;
        let ledger = match role {
            Role::C => Some(PathBuf::from(var("LEDGER_FILE").ok_or("LEDGER_FILE is not set")?)),
            _ => None,
        };
        let default_cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let cpus = num("LANGBENCH_CPUS", Some(default_cpus))?.max(1);
        let streams = num("PIPELINE_STREAMS", Some(cpus.max(2)))?.max(1);
        Ok(Config {
            role,
            addr,
            next,
            transform: Transform::new(rounds),
            max_inflight,
            max_payload,
            ledger,
            cpus,
            streams,
        })
    }
}

fn main() -> ExitCode {
    let _ = NODE.set(match var("LANGBENCH_NODE").as_deref() {
        Some("a") => "a",
        Some("b") => "b",
        Some("c") => "c",
        _ => "?",
    });
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            log!("configuration: {e}");
            return ExitCode::from(2);
        }
    };

    // Node c: the ledger is recovered (torn tail cut) and its committer
    // thread started before anything listens.
    let committer = match cfg.role {
        Role::C => {
            let path = cfg.ledger.as_ref().expect("c has a ledger");
            match ledger::Committer::start(path, cfg.max_inflight) {
                Ok(c) => Some(c),
                Err(e) => {
                    log!("ledger {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
        }
        _ => None,
    };

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.cpus)
        .thread_name(format!("pipeline-{}", node_name()))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log!("tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };

    let (outcome, committer) = match (cfg.role, committer) {
        (Role::A, _) => (rt.block_on(node_a::run(&cfg)), None),
        (Role::B, _) => (rt.block_on(node_b::run(&cfg)), None),
        (Role::C, Some(committer)) => {
            let (queue, thread) = committer.split();
            (rt.block_on(node_c::run(&cfg, queue)), Some(thread))
        }
        (Role::C, None) => unreachable!("c starts its committer above"),
    };
    // Tasks still alive after the node's grace period are dropped here (and
    // at c with them the last senders of the commit queue).
    rt.shutdown_timeout(Duration::from_millis(100));
    if let Some(thread) = committer {
        // The committer drains what it was given (every operation it took is
        // written, synced and acknowledged, or the process exits 1 on an I/O
        // error before acknowledging), closes the ledger and returns.
        match thread.join() {
            Ok(stats) => log!(
                "ledger closed: {} lines appended in {} syncs by this process",
                stats.lines,
                stats.syncs
            ),
            Err(_) => return ExitCode::from(1),
        }
    }
    match outcome {
        Ok(()) => {
            log!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
