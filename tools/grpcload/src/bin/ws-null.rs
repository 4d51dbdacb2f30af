//! ws-null: a minimal WebSocket echo server, the reference against which
//! wsload's ceiling is measured (see grpcload::wsnull).

use grpcload::wsnull::{parse_args, run, NullParsed, USAGE};

fn main() {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(NullParsed::Run(c)) => c,
        Ok(NullParsed::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(NullParsed::Version) => {
            println!("ws-null {}", grpcload::VERSION);
            return;
        }
        Err(e) => {
            eprintln!("ws-null: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cfg) {
        eprintln!("ws-null: {e}");
        std::process::exit(1);
    }
}
