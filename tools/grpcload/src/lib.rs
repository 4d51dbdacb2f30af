//! grpcload: a small, fast gRPC load generator (HTTP/2 cleartext, h2 crate)
//! and a "null" gRPC server used to measure the loader's own ceiling.
//!
//! httpload (HTTP/1.1) is the third binary; it shares the clock, statistics,
//! report helpers and open-loop schedule.
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

/// Version reported in the output JSON and in the user-agent header.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
