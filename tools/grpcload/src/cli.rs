//! Command-line parsing for grpcload (hand-written, `--opt value` or `--opt=value`).

use std::path::PathBuf;

use crate::status::OkSet;

pub const USAGE: &str = "\
usage: grpcload --target HOST:PORT --proto FILE [--import-path DIR]...
                --call package.Service.Method (--data-file FILE | --data JSON)
                [--connections N] [--concurrency N] [--duration S] [--rate R]
                [--timeout S] [--threads N] [--ok-status OK,NotFound,...]
                [--check-consistency] [--out FILE]

  --target             server address (h2c, plain TCP), e.g. 127.0.0.1:50051
  --proto              .proto file defining the service (compiled at start-up)
  --import-path        extra include directory for imports (repeatable)
  --call               method as package.Service.Method (unary or server-streaming)
  --data-file          JSON: one request object, or an array sent round-robin
  --data               the same, inline
  --connections        HTTP/2 connections (default min(concurrency, 8))
  --concurrency        closed loop: workers; open loop: max calls in flight
                       (default 64 closed, 4096 open)
  --duration           seconds of sending (default 10)
  --rate               open loop: calls per second on a fixed schedule
  --timeout            per-call timeout in seconds (default 10)
  --threads            OS threads, each with its own runtime (default 1)
  --ok-status          statuses counted as success (default OK)
  --check-consistency  every OK answer to the same request must be identical
  --out                write the JSON result here (default stdout)";

#[derive(Debug, Clone)]
pub struct Config {
    pub target: String,
    pub proto: PathBuf,
    pub import_paths: Vec<PathBuf>,
    pub call: String,
    pub data_file: Option<PathBuf>,
    pub data: Option<String>,
    pub connections: usize,
    pub concurrency: usize,
    pub duration_s: f64,
    pub rate: Option<f64>,
    pub timeout_s: f64,
    pub threads: usize,
    pub ok_status: OkSet,
    pub check_consistency: bool,
    pub out: Option<PathBuf>,
}

pub enum Parsed {
    Run(Box<Config>),
    Help,
    Version,
}

pub(crate) fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.trim().parse::<T>().map_err(|_| format!("{name}: invalid value {v:?}"))
}

pub(crate) fn seconds(name: &str, v: &str) -> Result<f64, String> {
    // accept "5", "5.5", "5s", "500ms" (ghz habit)
    let t = v.trim();
    let (n, mul) = if let Some(x) = t.strip_suffix("ms") {
        (x, 1e-3)
    } else if let Some(x) = t.strip_suffix('s') {
        (x, 1.0)
    } else if let Some(x) = t.strip_suffix('m') {
        (x, 60.0)
    } else {
        (t, 1.0)
    };
    let x: f64 = num(name, n)?;
    if !x.is_finite() || x <= 0.0 {
        return Err(format!("{name}: must be > 0, got {v:?}"));
    }
    Ok(x * mul)
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, String> {
    let mut target = None;
    let mut proto = None;
    let mut import_paths = Vec::new();
    let mut call = None;
    let mut data_file = None;
    let mut data = None;
    let mut connections: Option<usize> = None;
    let mut concurrency: Option<usize> = None;
    let mut duration_s = 10.0;
    let mut rate = None;
    let mut timeout_s = 10.0;
    let mut threads = 1usize;
    let mut ok_status = OkSet::default();
    let mut check_consistency = false;
    let mut out = None;

    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let flag = |inline: &Option<String>| -> Result<(), String> {
            if inline.is_some() {
                Err(format!("{name} takes no value"))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--check-consistency" => {
                flag(&inline)?;
                check_consistency = true;
                continue;
            }
            _ => {}
        }
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "--target" | "--host" => target = Some(value()?),
            "--proto" => proto = Some(PathBuf::from(value()?)),
            "--import-path" | "--import-paths" | "-i" => {
                for p in value()?.split(',').filter(|s| !s.is_empty()) {
                    import_paths.push(PathBuf::from(p));
                }
            }
            "--call" => call = Some(value()?),
            "--data-file" | "-D" => data_file = Some(PathBuf::from(value()?)),
            "--data" | "-d" => data = Some(value()?),
            "--connections" => connections = Some(num(&name, &value()?)?),
            "--concurrency" | "-c" => concurrency = Some(num(&name, &value()?)?),
            "--duration" | "-z" => duration_s = seconds(&name, &value()?)?,
            "--rate" | "-r" => {
                let r: f64 = num(&name, &value()?)?;
                if !r.is_finite() || r <= 0.0 {
                    return Err(format!("{name}: must be > 0"));
                }
                rate = Some(r);
            }
            "--timeout" | "-t" => timeout_s = seconds(&name, &value()?)?,
            "--threads" => threads = num(&name, &value()?)?,
            "--ok-status" => ok_status = OkSet::parse(&value()?)?,
            "--out" | "-o" => out = Some(PathBuf::from(value()?)),
            other if other.starts_with('-') => return Err(format!("unknown option {other} (see --help)")),
            other => {
                // a bare argument is the target, as in ghz
                if target.is_some() {
                    return Err(format!("unexpected argument {other:?}"));
                }
                target = Some(other.to_string());
            }
        }
    }

    let target = target.ok_or("--target is required")?;
    let proto = proto.ok_or("--proto is required")?;
    let call = call.ok_or("--call is required")?;
    if data_file.is_none() && data.is_none() {
        return Err("--data-file (or --data) is required".into());
    }
    if data_file.is_some() && data.is_some() {
        return Err("give either --data-file or --data, not both".into());
    }
    let concurrency = concurrency.unwrap_or(if rate.is_some() { 4096 } else { 64 });
    if concurrency == 0 {
        return Err("--concurrency must be >= 1".into());
    }
    let connections = connections.unwrap_or(concurrency.min(8));
    if connections == 0 {
        return Err("--connections must be >= 1".into());
    }
    if threads == 0 {
        return Err("--threads must be >= 1".into());
    }
    if threads > connections {
        return Err(format!("--threads ({threads}) must not exceed --connections ({connections})"));
    }
    if threads > concurrency {
        return Err(format!("--threads ({threads}) must not exceed --concurrency ({concurrency})"));
    }
    Ok(Parsed::Run(Box::new(Config {
        target,
        proto,
        import_paths,
        call,
        data_file,
        data,
        connections,
        concurrency,
        duration_s,
        rate,
        timeout_s,
        threads,
        ok_status,
        check_consistency,
        out,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Config, String> {
        match parse(s.split_whitespace().map(String::from))? {
            Parsed::Run(c) => Ok(*c),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn defaults_and_forms() {
        let c = p("--target 127.0.0.1:1 --proto a.proto --call p.S.M --data-file d.json").unwrap();
        assert_eq!((c.connections, c.concurrency, c.threads), (8, 64, 1));
        assert_eq!(c.duration_s, 10.0);
        assert!(c.rate.is_none());
        let c = p("--target=h:1 --proto=a.proto --call=p.S.M --data={} --rate 2000 --duration 4s --concurrency=3").unwrap();
        assert_eq!((c.connections, c.concurrency), (3, 3));
        assert_eq!(c.rate, Some(2000.0));
        assert_eq!(c.duration_s, 4.0);
        let c = p("--target h:1 --proto a --call p.S.M --data {} --rate 10").unwrap();
        assert_eq!((c.connections, c.concurrency), (8, 4096));
        let c = p("--target h:1 --proto a --call p.S.M --data {} --timeout 500ms --ok-status OK,NotFound --check-consistency").unwrap();
        assert!((c.timeout_s - 0.5).abs() < 1e-12);
        assert!(c.ok_status.contains(5) && c.check_consistency);
    }

    #[test]
    fn bad_arguments() {
        assert!(p("--proto a --call p.S.M --data {}").is_err());
        assert!(p("--target h:1 --proto a --call p.S.M").is_err());
        assert!(p("--target h:1 --proto a --call p.S.M --data {} --concurrency x").is_err());
        assert!(p("--target h:1 --proto a --call p.S.M --data {} --threads 3 --connections 2").is_err());
        assert!(p("--target h:1 --proto a --call p.S.M --data {} --bogus 1").is_err());
        assert!(p("--target h:1 --proto a --call p.S.M --data {} --duration -1").is_err());
        assert!(p("--target h:1 --proto a --call p.S.M --data {} --rate 0").is_err());
    }
}

/// The address of `host:port`: its first IPv4 address, else its first.
pub(crate) fn resolve_target(target: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> =
        target.to_socket_addrs().map_err(|e| format!("bad --target {target:?}: {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("--target {target:?} resolves to no address"))
}
