//! Node c's ledger: `{id} {dC hex}\n` lines, appended only, and the
//! committer thread that owns it.
//!
//! The committer is a dedicated OS thread, not a tokio task: nothing in the
//! runtime (a dropped stream, a cancelled future, the runtime's shutdown) can
//! interrupt it between writing a batch and acknowledging it. It owns the
//! file and the set of committed ids outright, so the hot path takes no lock.
//!
//! Group commit: it blocks for the first operation, takes everything queued
//! behind it (up to MAX_INFLIGHT), appends the new lines with one write,
//! makes them durable with one fdatasync and only then acknowledges the
//! batch. Operations that arrive during a sync form the next batch, so the
//! batch size follows the load with no timer.
//!
//! At most once: an id already committed is acknowledged at once with the
//! committed digest and `duplicate = true`, nothing written; a second copy
//! inside the same batch is acknowledged (duplicate, the first copy's digest)
//! after the sync that made the first one durable.
//!
//! A write or sync error is fatal: the batch is not acknowledged and the
//! process exits 1 (after a failed fsync the state of the file is unknown;
//! retrying could acknowledge lines that are not durable). The upstream nodes
//! keep the operations and resend them once c is back.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::thread::{self, JoinHandle};

use tokio::sync::mpsc;

use crate::digest::{Digest32, hex_into, parse_hex, valid_id};
use crate::log;
use crate::stage::Reply;

/// One operation to commit, with where to acknowledge it.
pub struct Commit {
    pub id: String,
    pub digest: Digest32,
    pub reply: Reply,
}

#[derive(Default, Debug)]
pub struct Stats {
    pub lines: u64,
    pub syncs: u64,
}

pub struct Committer {
    queue: mpsc::Sender<Commit>,
    thread: JoinHandle<Stats>,
}

impl Committer {
    /// Opens (or creates) the ledger, cuts a torn tail, rebuilds the set of
    /// committed ids and starts the committer thread. `capacity` bounds the
    /// queue in front of it and its batches.
    pub fn start(path: &Path, capacity: usize) -> io::Result<Committer> {
        let (file, committed) = recover(path)?;
        let (queue, rx) = mpsc::channel(capacity);
        let ledger = Ledger {
            file,
            committed,
            stats: Stats::default(),
        };
        let thread = thread::Builder::new()
            .name("pipeline-ledger".into())
            .spawn(move || ledger.run(rx, capacity))?;
        Ok(Committer { queue, thread })
    }

    pub fn split(self) -> (mpsc::Sender<Commit>, JoinHandle<Stats>) {
        (self.queue, self.thread)
    }
}

struct Ledger {
    file: File,
    committed: HashMap<Box<str>, Digest32>,
    stats: Stats,
}

impl Ledger {
    /// Runs until every sender of the queue is gone and the queue is empty.
    fn run(mut self, mut rx: mpsc::Receiver<Commit>, capacity: usize) -> Stats {
        let mut batch: Vec<Commit> = Vec::with_capacity(capacity);
        let mut lines: Vec<u8> = Vec::with_capacity(capacity.min(4096) * 100);
        // Ids first committed by the current batch, and their digests.
        let mut fresh: HashMap<Box<str>, Digest32> = HashMap::new();
        // Acknowledgements that wait for the batch's sync.
        let mut after_sync: Vec<(Commit, Digest32, bool)> = Vec::with_capacity(capacity);

        while rx.blocking_recv_many(&mut batch, capacity) > 0 {
            for op in batch.drain(..) {
                if let Some(digest) = self.committed.get(op.id.as_str()) {
                    // Durable already: acknowledge now.
                    let digest = *digest;
                    op.reply.ack(op.id, &digest, true);
                    continue;
                }
                match fresh.entry(op.id.as_str().into()) {
                    Entry::Occupied(first) => {
                        let digest = *first.get();
                        after_sync.push((op, digest, true));
                    }
                    Entry::Vacant(slot) => {
                        lines.extend_from_slice(op.id.as_bytes());
                        lines.push(b' ');
                        hex_into(&mut lines, &op.digest);
                        lines.push(b'\n');
                        slot.insert(op.digest);
                        let digest = op.digest;
                        after_sync.push((op, digest, false));
                    }
                }
            }
            if !lines.is_empty() {
                if let Err(e) = self.file.write_all(&lines).and_then(|()| self.file.sync_data()) {
                    log!(
                        "ledger write/sync failed: {e}; exiting without acknowledging {} operations",
                        after_sync.len()
                    );
                    std::process::exit(1);
                }
                self.stats.lines += fresh.len() as u64;
                self.stats.syncs += 1;
                lines.clear();
            }
            self.committed.extend(fresh.drain());
            for (op, digest, duplicate) in after_sync.drain(..) {
                op.reply.ack(op.id, &digest, duplicate);
            }
        }
        // Every line written was synced with its batch; closing needs no
        // further sync.
        drop(self.file);
        self.stats
    }
}

/// Opens the ledger for appending, cuts a torn last line (one without its
/// newline, left by a crash) and returns the committed ids.
fn recover(path: &Path) -> io::Result<(File, HashMap<Box<str>, Digest32>)> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
    // The file's directory entry must be durable too (the file may be new).
    if let Some(dir) = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }) {
        File::open(dir)?.sync_all()?;
    }

    let mut committed: HashMap<Box<str>, Digest32> = HashMap::new();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut line = Vec::with_capacity(256);
    let mut complete: u64 = 0; // bytes up to the end of the last full line
    let (mut malformed, mut repeated) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        complete += n as u64;
        let text = &line[..n - 1];
        let parsed = text
            .iter()
            .position(|&c| c == b' ')
            .and_then(|sp| {
                let (id, digest) = (&text[..sp], &text[sp + 1..]);
                let digest = parse_hex(digest)?;
                valid_id(id).then(|| (std::str::from_utf8(id).ok(), digest))
            });
        match parsed {
            Some((Some(id), digest)) => {
                if let Entry::Vacant(slot) = committed.entry(id.into()) {
                    slot.insert(digest);
                } else {
                    repeated += 1;
                }
            }
            _ => malformed += 1,
        }
    }
    drop(reader);

    let len = file.metadata()?.len();
    if len > complete {
        log!(
            "ledger {}: cutting a torn last line ({} bytes)",
            path.display(),
            len - complete
        );
        file.set_len(complete)?;
        file.sync_all()?;
    }
    if malformed > 0 || repeated > 0 {
        log!(
            "ledger {}: {malformed} malformed lines and {repeated} repeated ids skipped",
            path.display()
        );
    }
    log!(
        "ledger {}: {} committed ids recovered",
        path.display(),
        committed.len()
    );
    Ok((file, committed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hex;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    #[test]
    fn torn_tail_is_cut_and_ids_recovered() {
        let dir = std::env::temp_dir().join(format!("pipeline-ledger-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.txt");
        let d = [0xabu8; 32];
        let line = format!("op-1 {}\n", String::from_utf8(hex(&d)).unwrap());
        std::fs::write(&path, format!("{line}op-2 12ab")).unwrap();
        let (_file, committed) = recover(&path).unwrap();
        assert_eq!(committed.len(), 1);
        assert_eq!(committed.get("op-1"), Some(&d));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn commits_once_and_acknowledges_after_sync() {
        let dir = std::env::temp_dir().join(format!("pipeline-commit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.txt");
        let committer = Committer::start(&path, 16).unwrap();
        let (queue, thread) = committer.split();
        let sem = Arc::new(Semaphore::new(16));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (id, byte) in [("x", 1u8), ("x", 2), ("y", 3)] {
            let permit = sem.clone().try_acquire_owned().unwrap();
            let reply = Reply::new(tx.clone(), permit);
            queue
                .blocking_send(Commit {
                    id: id.into(),
                    digest: [byte; 32],
                    reply,
                })
                .unwrap();
        }
        drop(queue);
        let stats = thread.join().unwrap();
        assert_eq!(stats.lines, 2);
        let mut acks = Vec::new();
        while let Ok(Ok(r)) = rx.try_recv() {
            acks.push((r.ack.id.clone(), r.ack.digest[0], r.ack.duplicate));
        }
        acks.sort();
        assert_eq!(
            acks,
            vec![("x".into(), 1, false), ("x".into(), 1, true), ("y".into(), 3, false)]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
