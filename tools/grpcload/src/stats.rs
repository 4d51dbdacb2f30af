//! Per-thread statistics (owned by one thread, no locks) and their merge.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;

use crate::status::NAMES;

/// What an OK answer looked like, for --check-consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub status: u32,
    pub messages: u64,
    pub bytes: u64,
    pub hash: u64,
}

/// Histogram range: 1 ns .. 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

#[derive(Debug)]
pub struct Stats {
    pub count: u64,
    pub ok: u64,
    pub errors: u64,
    pub cut_off: u64,
    pub reconnects: u64,
    pub messages: u64,
    pub response_bytes: u64,
    pub request_bytes: u64,
    pub inconsistent: u64,
    pub delayed_by_cap: u64,
    pub status_known: [u64; 17],
    pub status_other: BTreeMap<u32, u64>,
    pub status_none: u64,
    pub error_kinds: HashMap<String, u64>,
    pub latency: Histogram<u64>,
    pub latency_uncorrected: Option<Histogram<u64>>,
    /// OK answers per second since the run's nominal start.
    pub per_second: Vec<u64>,
    pub first_send_ns: u64,
    pub last_answer_ns: u64,
    /// First OK answer per request index (only with --check-consistency).
    pub signatures: Vec<Option<Signature>>,
    /// Connections made successfully (initial ones and reconnects).
    pub connects: u64,
}

impl Stats {
    pub fn new(open_loop: bool, consistency_slots: usize) -> Stats {
        Stats {
            count: 0,
            ok: 0,
            errors: 0,
            cut_off: 0,
            reconnects: 0,
            messages: 0,
            response_bytes: 0,
            request_bytes: 0,
            inconsistent: 0,
            delayed_by_cap: 0,
            status_known: [0; 17],
            status_other: BTreeMap::new(),
            status_none: 0,
            error_kinds: HashMap::new(),
            latency: new_histogram(),
            latency_uncorrected: open_loop.then(new_histogram),
            per_second: Vec::new(),
            first_send_ns: u64::MAX,
            last_answer_ns: 0,
            signatures: vec![None; consistency_slots],
            connects: 0,
        }
    }

    #[inline]
    pub fn count_status(&mut self, code: u32) {
        match self.status_known.get_mut(code as usize) {
            Some(c) => *c += 1,
            None => *self.status_other.entry(code).or_insert(0) += 1,
        }
    }

    /// Counts an error kind; allocates only the first time a kind is seen.
    pub fn count_kind(&mut self, kind: &str) {
        if let Some(c) = self.error_kinds.get_mut(kind) {
            *c += 1;
        } else {
            self.error_kinds.insert(kind.to_string(), 1);
        }
    }

    #[inline]
    pub fn count_ok_second(&mut self, t0_ns: u64, t_ns: u64) {
        let s = (t_ns.saturating_sub(t0_ns) / 1_000_000_000) as usize;
        if s >= self.per_second.len() {
            self.per_second.resize(s + 1, 0);
        }
        self.per_second[s] += 1;
    }

    /// Checks an OK answer against the first OK answer to the same request.
    /// Returns false when it differs.
    #[inline]
    pub fn check_signature(&mut self, idx: usize, sig: Signature) -> bool {
        match &mut self.signatures[idx] {
            Some(first) => *first == sig,
            slot @ None => {
                *slot = Some(sig);
                true
            }
        }
    }

    /// Merges another thread's stats into this one.
    pub fn merge(&mut self, o: Stats) {
        self.count += o.count;
        self.ok += o.ok;
        self.errors += o.errors;
        self.cut_off += o.cut_off;
        self.reconnects += o.reconnects;
        self.messages += o.messages;
        self.response_bytes += o.response_bytes;
        self.request_bytes += o.request_bytes;
        self.inconsistent += o.inconsistent;
        self.delayed_by_cap += o.delayed_by_cap;
        self.connects += o.connects;
        for (a, b) in self.status_known.iter_mut().zip(o.status_known) {
            *a += b;
        }
        for (k, v) in o.status_other {
            *self.status_other.entry(k).or_insert(0) += v;
        }
        self.status_none += o.status_none;
        for (k, v) in o.error_kinds {
            *self.error_kinds.entry(k).or_insert(0) += v;
        }
        self.latency.add(&o.latency).expect("same histogram bounds");
        if let (Some(a), Some(b)) = (self.latency_uncorrected.as_mut(), o.latency_uncorrected.as_ref()) {
            a.add(b).expect("same histogram bounds");
        }
        if o.per_second.len() > self.per_second.len() {
            self.per_second.resize(o.per_second.len(), 0);
        }
        for (a, b) in self.per_second.iter_mut().zip(o.per_second) {
            *a += b;
        }
        self.first_send_ns = self.first_send_ns.min(o.first_send_ns);
        self.last_answer_ns = self.last_answer_ns.max(o.last_answer_ns);
        // another thread may have seen a different first answer to the same request
        for (a, b) in self.signatures.iter_mut().zip(o.signatures) {
            match (a.as_ref(), b) {
                (Some(x), Some(y)) if *x != y => {
                    self.inconsistent += 1;
                    self.errors += 1;
                    self.ok = self.ok.saturating_sub(1);
                    *self.error_kinds.entry("inconsistent answer".to_string()).or_insert(0) += 1;
                }
                (None, Some(y)) => *a = Some(y),
                _ => {}
            }
        }
    }

    /// Status names with their counts, codes in numeric order, then "(none)".
    pub fn status_codes(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Vec::new();
        for (code, &n) in self.status_known.iter().enumerate() {
            if n > 0 {
                v.push((NAMES[code].to_string(), n));
            }
        }
        for (&code, &n) in &self.status_other {
            v.push((format!("Code({code})"), n));
        }
        if self.status_none > 0 {
            v.push(("(none)".to_string(), self.status_none));
        }
        v
    }
}
