//! Clocks: CLOCK_MONOTONIC in nanoseconds (the same clock as Python's
//! time.monotonic()), conversion to tokio instants, and process CPU time.

use std::time::Duration;

/// CLOCK_MONOTONIC now, in nanoseconds.
#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds of CLOCK_MONOTONIC as seconds.
pub fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Maps CLOCK_MONOTONIC nanoseconds onto tokio instants. std/tokio instants
/// are CLOCK_MONOTONIC on Linux too, so one reading of both gives the offset.
#[derive(Clone, Copy)]
pub struct InstantMap {
    base_ns: u64,
    base: tokio::time::Instant,
}

impl InstantMap {
    pub fn new() -> Self {
        let base = tokio::time::Instant::now();
        let base_ns = mono_ns();
        InstantMap { base_ns, base }
    }

    pub fn at(&self, ns: u64) -> tokio::time::Instant {
        if ns >= self.base_ns {
            self.base + Duration::from_nanos(ns - self.base_ns)
        } else {
            self.base
                .checked_sub(Duration::from_nanos(self.base_ns - ns))
                .unwrap_or(self.base)
        }
    }
}

impl Default for InstantMap {
    fn default() -> Self {
        Self::new()
    }
}

/// User + system CPU seconds used by this process so far (all threads).
pub fn cpu_seconds() -> f64 {
    // SAFETY: zeroed rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
