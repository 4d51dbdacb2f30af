//! blackhole reader: `blackhole-reader DIR` decodes every `*.lz4` and
//! `*.lz4.tmp` file of DIR and prints one JSON line (the contract's
//! "Readers" section); exit 0 when every file decoded, 1 otherwise.
//!
//! The LZ4 frame format is parsed here (magic, descriptor and its checksum,
//! blocks, block and content checksums, linked or independent blocks,
//! skippable frames, several frames back to back) and each block goes through
//! lz4_flex's block decoder: lz4_flex's FrameDecoder ends a read at every
//! frame end and takes a frame cut before its end mark for a clean end, and
//! a reader must tell a truncated `.tmp` file from a corrupt final one.
//! Every record goes through the FlatBuffers verifier (`flatbuffers::root`).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::hash::Hasher as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blackhole::fbr::Request;
use sha2::{Digest, Sha256};
use twox_hash::XxHash32;

const LZ4_MAGIC: u32 = 0x184D_2204;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50; // ..=0x184D2A5F
const WINDOW: usize = 64 * 1024;
/// A record length above this is taken for corruption, not a record.
const MAX_RECORD: u64 = 64 << 20;

#[derive(Default)]
struct Stats {
    files: u64,
    tmp_files: u64,
    records: u64,
    stream_bytes: u64,
    file_bytes: u64,
    truncated_tmp: u64,
}

/// Why a file stopped decoding.
enum Stop {
    /// The LZ4 data is bad (magic, descriptor, block, checksum).
    Lz4(String),
    /// The file ends inside a frame.
    Eof,
    /// The frames end cleanly inside a record (this many bytes of it).
    Partial(usize),
    /// A record is bad: an error even in a `.tmp` file.
    Record(String),
}

/// The record stream of one file: complete records are taken as they come.
struct Records<'a> {
    name: &'a str,
    pending: Vec<u8>,
    start: usize,
    stats: &'a mut Stats,
    digest: &'a mut Sha256,
}

impl Records<'_> {
    fn push(&mut self, out: &[u8]) -> Result<(), Stop> {
        self.pending.extend_from_slice(out);
        loop {
            let avail = &self.pending[self.start..];
            if avail.len() < 8 {
                break;
            }
            let size = u64::from_le_bytes(avail[..8].try_into().unwrap());
            if size > MAX_RECORD {
                return Err(Stop::Record(format!(
                    "{}: record length {size} is not plausible",
                    self.name
                )));
            }
            let size = size as usize;
            if avail.len() - 8 < size {
                break;
            }
            record(&avail[8..8 + size], self.digest).map_err(|e| {
                Stop::Record(format!("{}: record {}: {e}", self.name, self.stats.records + 1))
            })?;
            self.start += 8 + size;
            self.stats.records += 1;
            self.stats.stream_bytes += 8 + size as u64;
        }
        if self.start == self.pending.len() || self.start >= (1 << 20) {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        Ok(())
    }

    fn left(&self) -> usize {
        self.pending.len() - self.start
    }
}

/// One record: verified, with an id; its fields go into the digest.
fn record(buf: &[u8], digest: &mut Sha256) -> Result<(), String> {
    let r = flatbuffers::root::<Request>(buf).map_err(|e| format!("FlatBuffers verifier: {e}"))?;
    let id = r.id().unwrap_or("");
    if id.is_empty() {
        return Err("record without an id".into());
    }
    let body = r.body().map(|b| b.bytes()).unwrap_or(&[]);
    for field in [
        id.as_bytes(),
        r.method().unwrap_or("").as_bytes(),
        r.uri().unwrap_or("").as_bytes(),
        r.headers().unwrap_or("").as_bytes(),
        body,
    ] {
        digest.update((field.len() as u32).to_le_bytes());
        digest.update(field);
    }
    Ok(())
}

fn xxh32(data: &[u8]) -> u32 {
    XxHash32::oneshot(0, data)
}

fn u32_at(data: &[u8], pos: usize) -> Option<u32> {
    data.get(pos..pos + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
}

/// Decodes every frame of `data` into `recs`.
fn decode_frames(data: &[u8], recs: &mut Records) -> Result<(), Stop> {
    let lz4 = |m: &str| Stop::Lz4(m.to_string());
    let mut pos = 0;
    let mut block = Vec::new();
    let mut window: Vec<u8> = Vec::new();
    while pos < data.len() {
        let magic = u32_at(data, pos).ok_or(Stop::Eof)?;
        if magic & 0xFFFF_FFF0 == SKIPPABLE_MAGIC {
            let size = u32_at(data, pos + 4).ok_or(Stop::Eof)? as usize;
            pos += 8;
            if data.len() - pos < size {
                return Err(Stop::Eof);
            }
            pos += size;
            continue;
        }
        if magic != LZ4_MAGIC {
            return Err(lz4(&format!("bad magic number {magic:#010x} at byte {pos}")));
        }
        // Frame descriptor.
        let desc = pos + 4;
        let (flg, bd) = match data.get(desc..desc + 2) {
            Some(b) => (b[0], b[1]),
            None => return Err(Stop::Eof),
        };
        if flg >> 6 != 1 {
            return Err(lz4("unsupported frame version"));
        }
        if flg & 0b10 != 0 || bd & 0x8F != 0 {
            return Err(lz4("reserved bits set in the frame descriptor"));
        }
        let independent = flg & 0x20 != 0;
        let block_checksums = flg & 0x10 != 0;
        let has_size = flg & 0x08 != 0;
        let content_checksum = flg & 0x04 != 0;
        let has_dict = flg & 0x01 != 0;
        let max_block = match (bd >> 4) & 7 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            _ => return Err(lz4("bad block maximum size")),
        };
        let hc_pos = desc + 2 + if has_size { 8 } else { 0 } + if has_dict { 4 } else { 0 };
        let hc = *data.get(hc_pos).ok_or(Stop::Eof)?;
        if (xxh32(&data[desc..hc_pos]) >> 8) as u8 != hc {
            return Err(lz4("frame descriptor checksum mismatch"));
        }
        if has_dict {
            return Err(lz4("frames with a dictionary id are not supported"));
        }
        let content_size =
            has_size.then(|| u64::from_le_bytes(data[desc + 2..desc + 10].try_into().unwrap()));
        pos = hc_pos + 1;
        block.resize(max_block, 0);
        window.clear();
        let mut hasher = XxHash32::with_seed(0);
        let mut content_len = 0u64;
        // Blocks.
        loop {
            let info = u32_at(data, pos).ok_or(Stop::Eof)?;
            pos += 4;
            if info == 0 {
                if content_size.is_some_and(|n| n != content_len) {
                    return Err(lz4("content size mismatch"));
                }
                if content_checksum {
                    let sum = u32_at(data, pos).ok_or(Stop::Eof)?;
                    pos += 4;
                    if sum != hasher.finish() as u32 {
                        return Err(lz4("content checksum mismatch"));
                    }
                }
                break;
            }
            let stored = info & 0x8000_0000 != 0;
            let len = (info & 0x7FFF_FFFF) as usize;
            if len > max_block {
                return Err(lz4("block larger than the frame's maximum"));
            }
            let rest = &data[pos..];
            let out: &[u8] = if stored {
                if rest.len() < len {
                    // A stored block is streamed out as it comes (as liblz4
                    // does): its bytes complete the records they can.
                    recs.push(rest)?;
                    return Err(Stop::Eof);
                }
                &rest[..len]
            } else {
                if rest.len() < len {
                    return Err(Stop::Eof);
                }
                let src = &rest[..len];
                if block_checksums {
                    let sum = u32_at(rest, len).ok_or(Stop::Eof)?;
                    if sum != xxh32(src) {
                        return Err(lz4("block checksum mismatch"));
                    }
                }
                let dict: &[u8] = if independent { &[] } else { &window };
                let n = lz4_flex::block::decompress_into_with_dict(src, &mut block, dict)
                    .map_err(|e| Stop::Lz4(format!("block at byte {}: {e}", pos - 4)))?;
                &block[..n]
            };
            if stored && block_checksums {
                // A missing checksum: the data is out already, then EOF.
                let sum = u32_at(rest, len).ok_or(Stop::Eof);
                match sum {
                    Ok(s) if s != xxh32(out) => return Err(lz4("block checksum mismatch")),
                    Ok(_) => {}
                    Err(e) => {
                        recs.push(out)?;
                        return Err(e);
                    }
                }
            }
            pos += len + if block_checksums { 4 } else { 0 };
            if content_checksum {
                hasher.write(out);
            }
            content_len += out.len() as u64;
            if !independent {
                window.extend_from_slice(out);
                if window.len() > 2 * WINDOW {
                    window.drain(..window.len() - WINDOW);
                }
            }
            recs.push(out)?;
        }
    }
    Ok(())
}

/// Reads one file; `Err` is the reader's error (the run stops there).
fn read_file(
    path: &Path,
    name: &str,
    tmp: bool,
    stats: &mut Stats,
    digest: &mut Sha256,
) -> Result<(), String> {
    let data = fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let mut recs = Records {
        name,
        pending: Vec::new(),
        start: 0,
        stats,
        digest,
    };
    let stop = match decode_frames(&data, &mut recs) {
        Ok(()) if recs.left() == 0 => return Ok(()),
        Ok(()) => Stop::Partial(recs.left()),
        Err(s) => s,
    };
    match stop {
        Stop::Record(msg) => Err(msg),
        // A .tmp file may end anywhere: the complete records before count.
        _ if tmp => {
            stats.truncated_tmp += 1;
            Ok(())
        }
        Stop::Lz4(msg) => Err(format!("{name}: LZ4: {msg}")),
        Stop::Eof => Err(format!("{name}: file ends inside a LZ4 frame")),
        Stop::Partial(left) => Err(format!("{name}: file ends inside a record ({left} bytes left)")),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.len() != 1 || args[0].as_bytes().starts_with(b"-") {
        eprintln!("usage: blackhole-reader DIR");
        return ExitCode::from(2);
    }
    let dir = PathBuf::from(&args[0]);
    let listing = match fs::read_dir(&dir) {
        Ok(l) if dir.is_dir() => l,
        _ => {
            println!(
                "{{\"ok\": false, \"error\": {}}}",
                json_str(&format!("{}: not a folder", dir.display()))
            );
            return ExitCode::from(1);
        }
    };

    let mut stats = Stats::default();
    let mut digest = Sha256::new();
    let mut error: Option<String> = None;
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in listing {
        match entry {
            Ok(e) => {
                let n = e.file_name().into_vec();
                if n.ends_with(b".lz4") || n.ends_with(b".lz4.tmp") {
                    names.push(n);
                }
            }
            Err(e) => {
                error = Some(format!("{}: {e}", dir.display()));
                break;
            }
        }
    }
    names.sort();
    if error.is_none() {
        for n in names {
            let name = String::from_utf8_lossy(&n).into_owned();
            let tmp = n.ends_with(b".tmp");
            let path = dir.join(OsString::from_vec(n));
            if tmp {
                stats.tmp_files += 1;
            } else {
                stats.files += 1;
            }
            match fs::metadata(&path) {
                Ok(m) => stats.file_bytes += m.len(),
                Err(e) => {
                    error = Some(format!("{name}: {e}"));
                    break;
                }
            }
            if let Err(e) = read_file(&path, &name, tmp, &mut stats, &mut digest) {
                error = Some(e);
                break;
            }
        }
    }

    let mut hex = String::with_capacity(64);
    for b in digest.finalize().iter() {
        let _ = write!(hex, "{b:02x}");
    }
    let ok = error.is_none();
    println!(
        "{{\"ok\": {ok}, \"files\": {}, \"tmp_files\": {}, \"records\": {}, \"stream_bytes\": {}, \
         \"file_bytes\": {}, \"truncated_tmp\": {}, \"digest\": \"{hex}\", \"error\": {}}}",
        stats.files,
        stats.tmp_files,
        stats.records,
        stats.stream_bytes,
        stats.file_bytes,
        stats.truncated_tmp,
        error.as_deref().map_or_else(|| "null".to_string(), json_str),
    );
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
