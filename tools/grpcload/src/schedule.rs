//! Open-loop schedule maths. Call i is due at t0 + i/R for every i with
//! i/R < duration. Times are computed from i directly (never accumulated),
//! so the schedule cannot drift. With several threads, thread k of T owns
//! the calls i = k, k+T, k+2T, ... so the merged schedule is exactly the
//! single-thread one.

/// Number of calls due in [0, duration): the count of integers i >= 0 with
/// i / rate < duration, i.e. ceil(rate * duration).
pub fn total_calls(rate: f64, duration_s: f64) -> u64 {
    // also false for NaN
    if !(rate.is_finite() && duration_s.is_finite() && rate > 0.0 && duration_s > 0.0) {
        return 0;
    }
    let x = rate * duration_s;
    let mut n = x.ceil() as u64;
    // guard against float noise either way: make sure (n-1)/rate < duration <= n/rate
    while n > 0 && offset_s(n - 1, rate) >= duration_s {
        n -= 1;
    }
    while offset_s(n, rate) < duration_s {
        n += 1;
    }
    n
}

fn offset_s(i: u64, rate: f64) -> f64 {
    i as f64 / rate
}

/// Offset of call i from t0, in nanoseconds (rounded to the nearest ns).
#[inline]
pub fn offset_ns(i: u64, rate: f64) -> u64 {
    (i as f64 * 1e9 / rate).round() as u64
}

/// The part of the schedule owned by one thread.
#[derive(Debug, Clone)]
pub struct ThreadSchedule {
    t0_ns: u64,
    rate: f64,
    total: u64,
    next: u64,
    step: u64,
}

impl ThreadSchedule {
    pub fn new(t0_ns: u64, rate: f64, duration_s: f64, thread: usize, threads: usize) -> Self {
        ThreadSchedule {
            t0_ns,
            rate,
            total: total_calls(rate, duration_s),
            next: thread as u64,
            step: threads.max(1) as u64,
        }
    }

    /// Due time (CLOCK_MONOTONIC ns) of this thread's next call, if any is left.
    #[inline]
    pub fn next_due(&self) -> Option<u64> {
        (self.next < self.total).then(|| self.t0_ns + offset_ns(self.next, self.rate))
    }

    /// Takes the next call if it is due at or before `now_ns`:
    /// (global call index, scheduled time in ns).
    #[inline]
    pub fn take_due(&mut self, now_ns: u64) -> Option<(u64, u64)> {
        let due = self.next_due()?;
        if due > now_ns {
            return None;
        }
        let i = self.next;
        self.next += self.step;
        Some((i, due))
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.total
    }
}

/// Share k of `total` split over `parts` as evenly as possible
/// (the first total % parts shares get one more).
pub fn split_even(total: usize, parts: usize, k: usize) -> usize {
    let parts = parts.max(1);
    total / parts + usize::from(k < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals() {
        assert_eq!(total_calls(2000.0, 4.0), 8000);
        assert_eq!(total_calls(3.0, 1.0), 3); // 0, 1/3, 2/3
        assert_eq!(total_calls(2.5, 1.0), 3); // 0, 0.4, 0.8
        assert_eq!(total_calls(0.1, 10.0), 1); // only t=0 is < 10 s
        assert_eq!(total_calls(0.1, 10.000001), 2);
        assert_eq!(total_calls(1000.0, 0.0005), 1);
        assert_eq!(total_calls(7.0, 0.0), 0);
        assert_eq!(total_calls(0.0, 5.0), 0);
        assert_eq!(total_calls(33333.0, 6.0), 199998);
        // every call is strictly inside the window, the next one is not
        for &(r, d) in &[(2000.0, 4.0), (12345.6, 3.3), (1.0 / 3.0, 10.0), (60000.0, 5.0)] {
            let n = total_calls(r, d);
            assert!(((n - 1) as f64 / r) < d);
            assert!((n as f64 / r) >= d);
        }
    }

    #[test]
    fn offsets_do_not_drift() {
        assert_eq!(offset_ns(0, 2000.0), 0);
        assert_eq!(offset_ns(1, 2000.0), 500_000);
        assert_eq!(offset_ns(7999, 2000.0), 3_999_500_000);
        assert_eq!(offset_ns(1, 3.0), 333_333_333);
        assert_eq!(offset_ns(2, 3.0), 666_666_667);
        assert_eq!(offset_ns(3_000_000, 3.0), 1_000_000_000_000_000);
        // far into a run: still exact to the nanosecond
        assert_eq!(offset_ns(360_000_000, 100_000.0), 3_600_000_000_000);
    }

    #[test]
    fn take_due_sends_everything_whose_time_has_come() {
        let t0 = 1_000_000_000u64;
        let mut s = ThreadSchedule::new(t0, 1000.0, 0.01, 0, 1); // 10 calls, 1 ms apart
        assert_eq!(s.next_due(), Some(t0));
        assert_eq!(s.take_due(t0 - 1), None);
        // a late wake-up 3.5 ms after t0 releases calls 0..=3 with their own times
        let mut got = Vec::new();
        while let Some(c) = s.take_due(t0 + 3_500_000) {
            got.push(c);
        }
        assert_eq!(got, vec![(0, t0), (1, t0 + 1_000_000), (2, t0 + 2_000_000), (3, t0 + 3_000_000)]);
        assert_eq!(s.next_due(), Some(t0 + 4_000_000));
        let mut n = got.len();
        while s.take_due(u64::MAX).is_some() {
            n += 1;
        }
        assert_eq!(n, 10);
        assert!(s.is_done());
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn threads_partition_the_schedule() {
        let t0 = 5u64;
        let (rate, dur) = (997.0, 1.0);
        let mut single: Vec<(u64, u64)> = Vec::new();
        let mut s = ThreadSchedule::new(t0, rate, dur, 0, 1);
        while let Some(c) = s.take_due(u64::MAX) {
            single.push(c);
        }
        for threads in 2..5 {
            let mut merged = Vec::new();
            for k in 0..threads {
                let mut s = ThreadSchedule::new(t0, rate, dur, k, threads);
                while let Some(c) = s.take_due(u64::MAX) {
                    merged.push(c);
                }
            }
            merged.sort();
            assert_eq!(merged, single, "threads {threads}");
        }
        assert_eq!(single.len(), 997);
    }

    #[test]
    fn even_split() {
        assert_eq!((0..3).map(|k| split_even(64, 3, k)).collect::<Vec<_>>(), vec![22, 21, 21]);
        assert_eq!((0..4).map(|k| split_even(8, 4, k)).sum::<usize>(), 8);
        assert_eq!(split_even(2, 4, 3), 0);
    }
}
