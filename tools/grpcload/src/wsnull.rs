//! ws-null: the smallest WebSocket echo server we can make, used only to
//! measure how fast wsload can go (its ceiling). Each thread runs a
//! current_thread tokio runtime with its own SO_REUSEPORT listener. A
//! connection answers the opening handshake of any path, then echoes every
//! data frame as it came (opcode and FIN kept, payload unmasked), answers
//! pings, and answers a close with a close. It does not validate UTF-8, has
//! no idle timeout and no GC: it is not a conforming ws-echo server, only the
//! fastest echo of the same bytes.

use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::ws;

pub const USAGE: &str = "\
usage: ws-null --listen HOST:PORT [--threads N] [--max-message BYTES]

  --listen       address to listen on (plain TCP)
  --threads      threads, each with its own runtime and SO_REUSEPORT listener (default 1)
  --max-message  largest frame accepted (default 1 MiB; larger: close 1009)";

pub struct NullConfig {
    pub listen: String,
    pub threads: usize,
    pub max_message: usize,
}

pub enum NullParsed {
    Run(NullConfig),
    Help,
    Version,
}

pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<NullParsed, String> {
    let mut cfg = NullConfig { listen: String::new(), threads: 1, max_message: 1 << 20 };
    let mut listen = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(NullParsed::Help),
            "-V" | "--version" => return Ok(NullParsed::Version),
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        match name.as_str() {
            "--listen" => listen = Some(value),
            "--threads" => cfg.threads = crate::cli::num(&name, &value)?,
            "--max-message" => cfg.max_message = crate::cli::num(&name, &value)?,
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    cfg.listen = listen.ok_or("--listen is required")?;
    if cfg.threads == 0 {
        return Err("--threads must be >= 1".into());
    }
    Ok(NullParsed::Run(cfg))
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

pub fn run(cfg: NullConfig) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let addr = cfg
        .listen
        .to_socket_addrs()
        .map_err(|e| format!("bad --listen {:?}: {e}", cfg.listen))?
        .next()
        .ok_or_else(|| format!("--listen {:?} resolves to no address", cfg.listen))?;
    let max = cfg.max_message;
    let mut handles = Vec::new();
    // bind every listener before serving, so a bad address fails at once
    let mut listeners = Vec::new();
    for _ in 0..cfg.threads {
        let std_listener = {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let l = rt.block_on(async { bind(addr) }).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            l.into_std().map_err(|e| e.to_string())?
        };
        listeners.push(std_listener);
    }
    for (k, l) in listeners.into_iter().enumerate() {
        handles.push(
            std::thread::Builder::new()
                .name(format!("ws-null-{k}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        let listener = TcpListener::from_std(l).expect("listener");
                        loop {
                            if let Ok((s, _)) = listener.accept().await {
                                let _ = s.set_nodelay(true);
                                tokio::task::spawn_local(serve(s, max));
                            }
                        }
                    })
                })
                .map_err(|e| e.to_string())?,
        );
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn write_all_now(s: &TcpStream, buf: &[u8], pos: &mut usize) -> std::io::Result<()> {
    while *pos < buf.len() {
        match s.try_write(&buf[*pos..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn serve(s: TcpStream, max: usize) {
    let _ = serve_inner(&s, max).await;
}

async fn serve_inner(s: &TcpStream, max: usize) -> std::io::Result<()> {
    let mut rbuf = vec![0u8; 64 << 10];
    let mut rpos: usize;
    let mut rlen = 0usize;
    let mut wbuf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut wpos = 0usize;
    // opening handshake
    loop {
        s.readable().await?;
        match s.try_read(&mut rbuf[rlen..]) {
            Ok(0) => return Ok(()),
            Ok(n) => rlen += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        match ws::parse_upgrade_request(&rbuf[..rlen]) {
            Ok(None) => continue,
            Err(_) => {
                wbuf.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = write_all_now(s, &wbuf, &mut wpos);
                return Ok(());
            }
            Ok(Some((used, key))) => {
                ws::put_upgrade_answer(&mut wbuf, &key);
                rpos = used;
                break;
            }
        }
    }
    let mut closing = false;
    loop {
        // echo every complete frame in the buffer
        loop {
            let avail = &rbuf[rpos..rlen];
            let h = match ws::parse_frame_head(avail, max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let code: u16 = if e == "ws: frame too large" { 1009 } else { 1002 };
                    ws::put_frame(&mut wbuf, ws::OP_CLOSE, &code.to_be_bytes(), None);
                    closing = true;
                    break;
                }
            };
            let total = h.head_len + h.len;
            if avail.len() < total {
                if rbuf.len() - rpos < total {
                    rbuf.copy_within(rpos..rlen, 0);
                    rlen -= rpos;
                    rpos = 0;
                    if rbuf.len() < total {
                        rbuf.resize(total, 0);
                    }
                }
                break;
            }
            let (a, b) = (rpos + h.head_len, rpos + total);
            rpos += total;
            let Some(key) = h.mask else {
                ws::put_frame(&mut wbuf, ws::OP_CLOSE, &1002u16.to_be_bytes(), None);
                closing = true;
                break;
            };
            ws::apply_mask(&mut rbuf[a..b], key, 0);
            match h.opcode {
                ws::OP_PING => ws::put_frame(&mut wbuf, ws::OP_PONG, &rbuf[a..b], None),
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let code = ws::close_code(&rbuf[a..b]);
                    let code = if code == 1005 { 1000 } else { code };
                    ws::put_frame(&mut wbuf, ws::OP_CLOSE, &code.to_be_bytes(), None);
                    closing = true;
                    break;
                }
                op => {
                    // data and continuation frames go back as they came
                    wbuf.push(if h.fin { 0x80 } else { 0 } | op);
                    let len = h.len;
                    if len < 126 {
                        wbuf.push(len as u8);
                    } else if len <= 0xFFFF {
                        wbuf.push(126);
                        wbuf.extend_from_slice(&(len as u16).to_be_bytes());
                    } else {
                        wbuf.push(127);
                        wbuf.extend_from_slice(&(len as u64).to_be_bytes());
                    }
                    wbuf.extend_from_slice(&rbuf[a..b]);
                }
            }
        }
        if rpos == rlen {
            rpos = 0;
            rlen = 0;
        }
        write_all_now(s, &wbuf, &mut wpos)?;
        if wpos == wbuf.len() {
            wbuf.clear();
            wpos = 0;
            if closing {
                return Ok(());
            }
        }
        let interest = if wpos < wbuf.len() { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let ready = s.ready(interest).await?;
        if ready.is_readable() || ready.is_read_closed() {
            if rlen == rbuf.len() {
                rbuf.copy_within(rpos..rlen, 0);
                rlen -= rpos;
                rpos = 0;
            }
            match s.try_read(&mut rbuf[rlen..]) {
                Ok(0) => return Ok(()),
                Ok(n) => rlen += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}
