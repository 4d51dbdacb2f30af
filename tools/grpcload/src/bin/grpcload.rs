//! grpcload: gRPC load generator (closed or open loop) over h2c.

use std::sync::Arc;

use grpcload::cli::{self, Config, Parsed, USAGE};
use grpcload::clock::cpu_seconds;
use grpcload::load::{self, Plan};
use grpcload::report::{self, RunInfo};
use grpcload::{proto, VERSION};

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("grpcload: {msg}");
    std::process::exit(code);
}

fn prepare(cfg: &Config) -> Result<Plan, String> {
    let pool = proto::load_pool(&cfg.proto, &cfg.import_paths)?;
    let method = proto::find_method(&pool, &cfg.call)?;
    let requests = match (&cfg.data_file, &cfg.data) {
        (Some(f), _) => {
            let raw = std::fs::read(f).map_err(|e| format!("cannot read data file {}: {e}", f.display()))?;
            proto::encode_requests(&method.input, &raw, &format!("data file {}", f.display()))?
        }
        (None, Some(d)) => proto::encode_requests(&method.input, d.as_bytes(), "--data")?,
        (None, None) => unreachable!("checked by the parser"),
    };
    Plan::new(
        &cfg.target,
        &method.path,
        requests,
        cfg.ok_status.clone(),
        cfg.check_consistency,
        cfg.rate,
        cfg.duration_s,
        cfg.timeout_s,
        cfg.connections,
        cfg.concurrency,
        cfg.threads,
    )
}

fn main() {
    let cfg = match cli::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(c)) => c,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(Parsed::Version) => {
            println!("grpcload {VERSION}");
            return;
        }
        Err(e) => fail(2, &e),
    };
    let plan = match prepare(&cfg) {
        Ok(p) => Arc::new(p),
        Err(e) => fail(1, &e),
    };
    let stats = match load::run(Arc::clone(&plan)) {
        Ok(s) => s,
        Err(e) => fail(1, &e),
    };
    let info = RunInfo {
        target: &cfg.target,
        call: &cfg.call,
        open_loop: cfg.rate.is_some(),
        connections: cfg.connections,
        concurrency: cfg.concurrency,
        rate: cfg.rate,
        threads: cfg.threads,
        duration_s: cfg.duration_s,
        cpu_s: cpu_seconds(),
    };
    let mut json = report::to_json(&info, &stats);
    json.push('\n');
    match &cfg.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, json) {
                fail(1, &format!("cannot write {}: {e}", path.display()));
            }
        }
        None => print!("{json}"),
    }
}
