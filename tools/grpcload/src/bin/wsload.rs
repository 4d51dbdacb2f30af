//! wsload: WebSocket load generator (closed loop, open loop, connection
//! ramp; every echo checked; see grpcload::wsload).

use std::sync::Arc;

use grpcload::clock::cpu_seconds;
use grpcload::wsload::{self, WsParsed, WsPlan, USAGE};
use grpcload::VERSION;

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("wsload: {msg}");
    std::process::exit(code);
}

fn main() {
    let cfg = match wsload::parse_args(std::env::args().skip(1)) {
        Ok(WsParsed::Run(c)) => *c,
        Ok(WsParsed::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(WsParsed::Version) => {
            println!("wsload {VERSION}");
            return;
        }
        Err(e) => fail(2, &e),
    };
    let nofile = wsload::raise_nofile();
    let out = cfg.out.clone();
    let plan = match WsPlan::new(cfg) {
        Ok(p) => Arc::new(p),
        Err(e) => fail(2, &e),
    };
    let (stats, steps) = if plan.cfg.ramp.is_some() {
        match wsload::run_ramp(Arc::clone(&plan)) {
            Ok((s, st)) => (s, Some(st)),
            Err(e) => fail(1, &e),
        }
    } else {
        match wsload::run(Arc::clone(&plan)) {
            Ok(s) => (s, None),
            Err(e) => fail(1, &e),
        }
    };
    let json = wsload::to_json(&plan.cfg, &stats, steps.as_deref(), cpu_seconds(), nofile);
    if let Err(e) = grpcload::report::write_result(out.as_deref(), &json) {
        fail(1, &e);
    }
}
