//! Runs the flatc that the `flatc` crate built from its vendored source
//! (flatbuffers 23.5.26) with this program's arguments.
use std::process::{exit, Command};

fn main() {
    let status = Command::new(flatc::flatc())
        .args(std::env::args_os().skip(1))
        .status()
        .unwrap_or_else(|e| {
            eprintln!("cannot run {}: {e}", flatc::flatc().display());
            exit(2)
        });
    exit(status.code().unwrap_or(1));
}
