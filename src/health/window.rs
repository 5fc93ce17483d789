//! The sliding window a provider's failure ratio is computed over: how many attempts that count
//! for health there were in the last `health.window`, and how many of them failed.
//!
//! Kept as counts in buckets of a sixty-fourth of the window, not one entry per attempt:
//! recording is O(1) and the memory is bounded whatever the send rate (at 10,000 sends a second
//! and a 60 s window, one entry per attempt meant 600,000 entries, and summing them on every
//! send took a tenth of the CPU of a delivery). An attempt leaves the window at most a
//! sixty-fourth of it early.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const BUCKETS: u32 = 64;

struct Bucket {
    start: Instant,
    total: usize,
    failed: usize,
}

#[derive(Default)]
pub(super) struct Window {
    buckets: VecDeque<Bucket>,
    total: usize,
    failed: usize,
}

fn width(span: Duration) -> Duration {
    (span / BUCKETS).max(Duration::from_millis(1))
}

impl Window {
    /// Forgets the attempts older than `span`.
    pub(super) fn prune(&mut self, now: Instant, span: Duration) {
        while let Some(b) = self.buckets.front() {
            if now.saturating_duration_since(b.start) <= span {
                break;
            }
            self.total -= b.total;
            self.failed -= b.failed;
            self.buckets.pop_front();
        }
    }

    pub(super) fn push(&mut self, now: Instant, span: Duration, failed: bool) {
        self.prune(now, span);
        let fresh = self.buckets.back().is_some_and(|b| now.saturating_duration_since(b.start) < width(span));
        if !fresh {
            self.buckets.push_back(Bucket { start: now, total: 0, failed: 0 });
        }
        let bucket = self.buckets.back_mut().expect("just ensured");
        bucket.total += 1;
        self.total += 1;
        if failed {
            bucket.failed += 1;
            self.failed += 1;
        }
    }

    /// (failed ÷ total, total); (0, 0) when empty.
    pub(super) fn failure_ratio(&self) -> (f64, usize) {
        match self.total {
            0 => (0.0, 0),
            total => (self.failed as f64 / total as f64, total),
        }
    }

    pub(super) fn clear(&mut self) {
        *self = Window::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_inside_the_window_only() {
        let span = Duration::from_secs(64);
        let t0 = Instant::now();
        let mut w = Window::default();
        for i in 0..100 {
            w.push(t0 + Duration::from_millis(i * 10), span, i % 4 == 0);
        }
        assert_eq!(w.failure_ratio(), (0.25, 100));
        // Half a window later, the next attempt joins them; a window and more later, they are gone.
        w.push(t0 + Duration::from_secs(32), span, true);
        assert_eq!(w.failure_ratio().1, 101);
        w.push(t0 + Duration::from_secs(66), span, false);
        assert_eq!(w.failure_ratio(), (0.5, 2));
        w.prune(t0 + Duration::from_secs(200), span);
        assert_eq!(w.failure_ratio(), (0.0, 0));
        // One bucket per sixty-fourth of the window, whatever the rate.
        for i in 0..10_000 {
            w.push(t0 + Duration::from_secs(300) + Duration::from_micros(i), span, false);
        }
        assert_eq!(w.buckets.len(), 1);
        w.clear();
        assert_eq!(w.failure_ratio(), (0.0, 0));
    }
}
