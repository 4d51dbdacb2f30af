//! The result JSON, written by hand to keep the field order of the spec.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::clock::ns_to_s;
use crate::stats::Stats;

pub struct RunInfo<'a> {
    pub target: &'a str,
    pub call: &'a str,
    pub open_loop: bool,
    pub connections: usize,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub threads: usize,
    pub duration_s: f64,
    pub cpu_s: f64,
}

pub(crate) fn jstr(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

pub(crate) fn jf(x: f64) -> String {
    if x.is_finite() {
        // serde_json prints floats so that they read back exactly
        serde_json::to_string(&x).expect("float to JSON")
    } else {
        "null".into()
    }
}

pub(crate) fn latency(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "null".into();
    }
    let ms = |ns: u64| jf(ns as f64 / 1e6);
    format!(
        "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{}}}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        jf(h.mean() / 1e6),
    )
}

pub fn to_json(info: &RunInfo, s: &Stats) -> String {
    let mut o = String::with_capacity(1024);
    let (t0, t1) = if s.first_send_ns == u64::MAX {
        ("null".to_string(), "null".to_string())
    } else {
        (jf(ns_to_s(s.first_send_ns)), jf(ns_to_s(s.last_answer_ns.max(s.first_send_ns))))
    };
    o.push('{');
    let _ = write!(o, "\"tool\":\"grpcload\",\"version\":{}", jstr(crate::VERSION));
    let _ = write!(o, ",\"target\":{},\"call\":{}", jstr(info.target), jstr(info.call));
    let _ = write!(o, ",\"mode\":\"{}\"", if info.open_loop { "open" } else { "closed" });
    let _ = write!(o, ",\"connections\":{},\"concurrency\":{}", info.connections, info.concurrency);
    let _ = write!(o, ",\"rate\":{}", info.rate.map(jf).unwrap_or_else(|| "null".into()));
    let _ = write!(o, ",\"threads\":{},\"duration_s\":{}", info.threads, jf(info.duration_s));
    let _ = write!(o, ",\"send_t0\":{t0},\"send_t1\":{t1}");
    let _ = write!(
        o,
        ",\"count\":{},\"ok\":{},\"errors\":{},\"cut_off\":{},\"reconnects\":{}",
        s.count, s.ok, s.errors, s.cut_off, s.reconnects
    );
    o.push_str(",\"status_codes\":{");
    for (i, (name, n)) in s.status_codes().iter().enumerate() {
        let _ = write!(o, "{}{}:{}", if i > 0 { "," } else { "" }, jstr(name), n);
    }
    o.push_str("},\"error_kinds\":{");
    let mut kinds: Vec<(&String, &u64)> = s.error_kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (i, (name, n)) in kinds.iter().enumerate() {
        let _ = write!(o, "{}{}:{}", if i > 0 { "," } else { "" }, jstr(name), n);
    }
    o.push('}');
    let _ = write!(o, ",\"latency_ms\":{}", latency(&s.latency));
    let _ = write!(
        o,
        ",\"latency_uncorrected_ms\":{}",
        s.latency_uncorrected.as_ref().map(latency).unwrap_or_else(|| "null".into())
    );
    let _ = write!(
        o,
        ",\"messages\":{},\"response_bytes\":{},\"request_bytes\":{}",
        s.messages, s.response_bytes, s.request_bytes
    );
    let _ = write!(o, ",\"inconsistent\":{},\"delayed_by_cap\":{}", s.inconsistent, s.delayed_by_cap);
    o.push_str(",\"per_second\":[");
    for (i, n) in s.per_second.iter().enumerate() {
        let _ = write!(o, "{}{}", if i > 0 { "," } else { "" }, n);
    }
    o.push(']');
    let _ = write!(o, ",\"cpu_s\":{}", jf(info.cpu_s));
    o.push('}');
    o
}

/// Writes a tool's result JSON (with a final newline) to `out`, or to stdout.
pub fn write_result(out: Option<&std::path::Path>, json: &str) -> Result<(), String> {
    let mut text = String::with_capacity(json.len() + 1);
    text.push_str(json);
    text.push('\n');
    match out {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
