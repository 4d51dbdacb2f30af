//! httpload: HTTP/1.1 load generator (closed or open loop, keep-alive, one
//! request in flight per connection; see grpcload::httpload).

use std::sync::Arc;

use grpcload::clock::cpu_seconds;
use grpcload::httpload::{self, HttpParsed, HttpPlan, USAGE};
use grpcload::VERSION;

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("httpload: {msg}");
    std::process::exit(code);
}

fn main() {
    let cfg = match httpload::parse_args(std::env::args().skip(1)) {
        Ok(HttpParsed::Run(c)) => *c,
        Ok(HttpParsed::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(HttpParsed::Version) => {
            println!("httpload {VERSION}");
            return;
        }
        Err(e) => fail(2, &e),
    };
    let out = cfg.out.clone();
    // a bad target, method, path, header or nonce is a bad argument too
    let plan = match HttpPlan::new(cfg) {
        Ok(p) => Arc::new(p),
        Err(e) => fail(2, &e),
    };
    let stats = match httpload::run(Arc::clone(&plan)) {
        Ok(s) => s,
        Err(e) => fail(1, &e),
    };
    // the acknowledged ids first: a result file means both were written
    if let Some(path) = plan.cfg.acked_out.as_deref() {
        if let Err(e) = stats.write_acked(path) {
            fail(1, &e);
        }
    }
    let json = httpload::to_json(&plan.cfg, &stats, cpu_seconds());
    if let Err(e) = grpcload::report::write_result(out.as_deref(), &json) {
        fail(1, &e);
    }
}
