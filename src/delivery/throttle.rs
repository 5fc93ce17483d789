//! `max_rate`: a provider's send-rate limit, kept for the whole cluster. A send takes a turn
//! before it goes; a turn due within `rate_wait` is waited for, a later one is not taken and
//! the message moves on to the next provider at once (it would only wait to move on).
//!
//! The turns are GCRA, the algorithm of redis-cell and KumoMTA's throttles: the limit's
//! interval (50 ms at `20/s`) times the send's cost (SES: its recipients; others: 1) is added to
//! the provider's next free time, so sends are spaced evenly and no second holds more than the
//! limit. With `[cluster]` the next free time lives in Redis and its clock decides
//! ([`Cluster::reserve_rate`]); without Redis — no `[cluster]`, or Redis down or slow — this
//! node keeps its own at its share of the limit (limit ÷ live nodes last seen), so the cluster
//! as a whole still stays under it.

use crate::cluster::Cluster;
use crate::config::Rate;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// This node's own turns, per provider: the next free time.
#[derive(Default)]
pub struct Throttle {
    next_free: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// Takes a turn on `provider`: `Some(wait)` — send after `wait`; `None` — no turn within
    /// `max_wait` (nothing taken).
    pub async fn turn(
        &self,
        cluster: Option<&Cluster>,
        provider: &str,
        rate: Rate,
        cost: u32,
        max_wait: Duration,
    ) -> Option<Duration> {
        let interval = rate.interval();
        if let Some(cluster) = cluster
            && let Some(answer) = cluster.reserve_rate(provider, interval, cost, max_wait).await
        {
            return answer;
        }
        let share = cluster.map_or(1, |c| c.status.live_nodes()) as u32;
        self.local_turn(provider, interval * share, cost, max_wait, Instant::now())
    }

    fn local_turn(
        &self,
        provider: &str,
        interval: Duration,
        cost: u32,
        max_wait: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let mut next_free = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        let next = next_free.entry(provider.to_string()).or_insert(now);
        let start = (*next).max(now);
        let wait = start - now;
        if wait > max_wait {
            return None;
        }
        *next = start + interval * cost;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn turns_are_spaced_one_interval_apart_and_a_late_one_is_not_taken() {
        let t = Throttle::default();
        let now = Instant::now();
        let turn = |cost, at: Duration| t.local_turn("p", 50 * MS, cost, 120 * MS, now + at);
        assert_eq!(turn(1, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(turn(1, Duration::ZERO), Some(50 * MS));
        assert_eq!(turn(1, Duration::ZERO), Some(100 * MS));
        assert_eq!(turn(1, Duration::ZERO), None, "150 ms away is over max_wait");
        assert_eq!(turn(1, 40 * MS), Some(110 * MS), "nothing was taken by the refused turn");
        // A send of three recipients (SES) takes three intervals.
        assert_eq!(turn(3, 200 * MS), Some(Duration::ZERO));
        assert_eq!(turn(1, 200 * MS), None, "150 ms away");
        assert_eq!(turn(1, 250 * MS), Some(100 * MS));
        // An idle provider does not bank turns: no burst after a quiet spell.
        assert_eq!(turn(1, 10_000 * MS), Some(Duration::ZERO));
        assert_eq!(turn(1, 10_000 * MS), Some(50 * MS));
    }

    #[test]
    fn providers_have_their_own_turns() {
        let t = Throttle::default();
        let now = Instant::now();
        assert_eq!(t.local_turn("a", 50 * MS, 1, Duration::ZERO, now), Some(Duration::ZERO));
        assert_eq!(t.local_turn("a", 50 * MS, 1, Duration::ZERO, now), None);
        assert_eq!(t.local_turn("b", 50 * MS, 1, Duration::ZERO, now), Some(Duration::ZERO));
    }
}
