//! grpc-null: a minimal, fast h2c gRPC server answering every call with a
//! pre-built response (see grpcload::null).

use grpcload::null::{parse_args, run, NullParsed, USAGE};

fn main() {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(NullParsed::Run(c)) => c,
        Ok(NullParsed::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(NullParsed::Version) => {
            println!("grpc-null {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(e) => {
            eprintln!("grpc-null: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cfg) {
        eprintln!("grpc-null: {e}");
        std::process::exit(1);
    }
}
