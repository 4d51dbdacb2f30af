//! grpcload: a small, fast gRPC load generator (HTTP/2 cleartext, h2 crate)
//! and a "null" gRPC server used to measure the loader's own ceiling.
//!
//! httpload (HTTP/1.1) and wsload (WebSocket, with ws-null, its reference
//! echo server) are the other binaries; they share the clock, statistics,
//! report helpers, start-up and open-loop schedule.
//!
//! Library modules are shared by the binaries and hold everything that
//! has unit tests: message-frame parsing, status names, open-loop schedule
//! maths, JSON -> protobuf request encoding.

pub mod cli;
pub mod clock;
pub mod frame;
pub mod http;
pub mod httpload;
pub mod load;
pub mod null;
pub mod proto;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod status;
pub mod ws;
pub mod wsload;
pub mod wsnull;

/// Version reported in the output JSON and in the user-agent header.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
