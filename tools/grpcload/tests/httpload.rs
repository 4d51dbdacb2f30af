//! httpload against a tiny in-test HTTP/1.1 server that checks every request
//! (path, id header, body bytes) and answers 200, 413, chunked 200 split
//! over several writes, or 200 with `Connection: close`, depending on n.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpcload::http::{make_pool, put_body};
use grpcload::httpload::{self, HttpParsed, HttpPlan, HttpStats};

#[derive(Default)]
struct Seen {
    ids: Mutex<HashSet<String>>,
    requests: AtomicU64,
    bad: AtomicU64,
    closes: AtomicU64,
    r413: AtomicU64,
    /// ids answered 200 (the write of the answer succeeded)
    ok_ids: Mutex<HashSet<String>>,
}

fn serve_conn(mut s: TcpStream, seen: Arc<Seen>, pool: Arc<Vec<u8>>, nonce: String) {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        // one request: head, then Content-Length bytes
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let reqline = lines.next().unwrap_or("").to_string();
        let mut len = 0usize;
        let mut id = String::new();
        let mut host = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(usize::MAX),
                    "x-request-id" => id = v.trim().to_string(),
                    "host" => host = true,
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + len {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        seen.requests.fetch_add(1, Ordering::SeqCst);
        // check: POST /bh/{conn}/{n}, id NONCE-conn-n, body as blackhole's
        let parts: Vec<&str> = reqline.split(' ').collect();
        let path: Vec<&str> = parts.get(1).unwrap_or(&"").split('/').collect();
        let (c, n): (u64, u64) = (path.get(2).and_then(|x| x.parse().ok()).unwrap_or(u64::MAX), path.get(3).and_then(|x| x.parse().ok()).unwrap_or(0));
        let mut want = Vec::new();
        put_body(&mut want, &pool, id.as_bytes(), c, n, 2048);
        let ok = parts.len() == 3
            && parts[0] == "POST"
            && parts[2] == "HTTP/1.1"
            && host
            && id == format!("{nonce}-{c}-{n}")
            && body == want;
        if !ok || !seen.ids.lock().unwrap().insert(id.clone()) {
            seen.bad.fetch_add(1, Ordering::SeqCst);
        }
        if n % 10 != 3 {
            seen.ok_ids.lock().unwrap().insert(id);
        }
        let r = match n % 10 {
            3 => {
                seen.r413.fetch_add(1, Ordering::SeqCst);
                s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n\r\nlarge")
            }
            5 => {
                seen.closes.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
                return;
            }
            7 => {
                let a = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Enc");
                std::thread::sleep(Duration::from_micros(200));
                let b = s.write_all(b"oding: chunked\r\n\r\n4\r\nab");
                std::thread::sleep(Duration::from_micros(200));
                a.and(b).and(s.write_all(b"cd\r\n0\r\n\r\n"))
            }
            _ => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        };
        if r.is_err() {
            return;
        }
    }
}

fn server(nonce: &str) -> (String, Arc<Seen>, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let pool = Arc::new(make_pool());
    let (seen2, stop2, nonce) = (Arc::clone(&seen), Arc::clone(&stop), nonce.to_string());
    std::thread::spawn(move || {
        for s in l.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(s) = s {
                let (seen, pool, nonce) = (Arc::clone(&seen2), Arc::clone(&pool), nonce.clone());
                std::thread::spawn(move || serve_conn(s, seen, pool, nonce));
            }
        }
    });
    (addr, seen, stop)
}

fn run(args: &str) -> Result<HttpStats, String> {
    let cfg = match httpload::parse_args(args.split_whitespace().map(String::from))? {
        HttpParsed::Run(c) => *c,
        _ => panic!("not a run"),
    };
    httpload::run(Arc::new(HttpPlan::new(cfg)?))
}

fn check(st: &HttpStats, seen: &Seen) {
    let s = &st.base;
    assert_eq!(seen.bad.load(Ordering::SeqCst), 0, "requests the server found wrong");
    assert_eq!(s.count, s.ok + s.errors);
    assert_eq!(s.cut_off, 0);
    assert_eq!(s.count, seen.requests.load(Ordering::SeqCst), "every request answered and counted once");
    let r413 = seen.r413.load(Ordering::SeqCst);
    assert_eq!(st.status[413], r413);
    assert_eq!(s.errors, r413, "only the 413s are errors: {:?}", s.error_kinds);
    assert_eq!(s.error_kinds.get("http 413").copied().unwrap_or(0), r413);
    assert_eq!(st.status[200], s.ok);
    assert_eq!(s.latency.len(), s.ok);
    let closes = seen.closes.load(Ordering::SeqCst);
    assert!(closes > 0 && s.reconnects <= closes && s.reconnects + 8 >= closes, "reconnects {} closes {closes}", s.reconnects);
    assert!(st.bytes_sent > s.count * 2048);
    assert!(s.first_send_ns < s.last_answer_ns);
}

#[test]
fn closed_loop_counts_every_answer() {
    let (addr, seen, stop) = server("tst");
    let st = run(&format!(
        "--target {addr} --connections 6 --threads 2 --duration 400ms --drain-timeout 5 --method POST \
         --path /bh/{{conn}}/{{n}} --id-header X-Request-ID --nonce tst"
    ))
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    check(&st, &seen);
    assert!(st.base.count > 200, "only {} requests", st.base.count);
    assert_eq!(st.late, 0);
}

#[test]
fn open_loop_sends_the_schedule_exactly() {
    let (addr, seen, stop) = server("opn");
    let st = run(&format!(
        "--target {addr} --connections 8 --threads 2 --rate 2000 --duration 500ms --drain-timeout 5 \
         --method POST --path /bh/{{conn}}/{{n}} --id-header X-Request-ID --nonce opn"
    ))
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    check(&st, &seen);
    assert_eq!(st.base.count, 1000);
    assert!(st.base.latency_uncorrected.is_some());
}

#[test]
fn no_server_is_an_error() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = run(&format!("--target {addr} --connections 2 --duration 100ms")).err().unwrap();
    assert!(e.contains("connect: connection refused"), "{e}");
}

#[test]
fn acked_ids_are_exactly_the_ok_answers() {
    let (addr, seen, stop) = server("ack");
    let dir = std::env::temp_dir().join(format!("httpload-acked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acked.txt");
    let st = run(&format!(
        "--target {addr} --connections 4 --threads 2 --duration 300ms --drain-timeout 5 --method POST \
         --path /bh/{{conn}}/{{n}} --id-header X-Request-ID --nonce ack --acked-out {}",
        file.display()
    ))
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    check(&st, &seen);
    st.write_acked(&file).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, st.base.ok, "one line per ok answer");
    let acked: HashSet<String> = lines.iter().map(|s| s.to_string()).collect();
    assert_eq!(acked.len(), lines.len(), "no id twice");
    assert_eq!(acked, *seen.ok_ids.lock().unwrap(), "the acked ids are the ids the server answered 200");
    assert!(st.base.errors > 0, "the 413s are not acked");
    let _ = std::fs::remove_dir_all(&dir);
}
