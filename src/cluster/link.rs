//! Whether this node reaches Redis, told once per change: a log line when the connection is
//! first made, lost, and back, and `baton_cluster_connected`. The listener is told to
//! subscribe again whenever Redis comes back.

use super::Status;
use super::store::StoreError;
use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No call has been made yet.
    Unknown,
    Up,
    Down,
}

pub struct Link {
    state: State,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    /// Bumped each time Redis comes back (the listener resubscribes).
    back: watch::Sender<u64>,
}

impl Link {
    pub fn new(metrics: Arc<Metrics>, status: Arc<Status>) -> Link {
        metrics.set_cluster_connected(false);
        Link { state: State::Unknown, metrics, status, back: watch::Sender::new(0) }
    }

    /// A receiver that changes each time Redis is reachable again after an outage.
    pub fn comebacks(&self) -> watch::Receiver<u64> {
        self.back.subscribe()
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Notes a call's outcome; the value when it worked.
    pub fn observe<T>(&mut self, result: Result<T, StoreError>) -> Option<T> {
        match result {
            Ok(value) => {
                self.up();
                Some(value)
            }
            Err(e) => {
                self.down(&e);
                None
            }
        }
    }

    fn up(&mut self) {
        match self.state {
            State::Up => return,
            State::Unknown => tracing::info!("cluster: connected to Redis; sharing provider health"),
            State::Down => {
                tracing::info!("cluster: Redis is reachable again; sharing provider health again");
                self.back.send_modify(|n| *n += 1);
            }
        }
        self.set(State::Up);
    }

    fn down(&mut self, error: &StoreError) {
        match self.state {
            State::Down => return,
            State::Unknown => tracing::warn!(
                %error,
                "cluster: cannot reach Redis; this node goes on with its own provider health and keeps trying"
            ),
            State::Up => tracing::warn!(
                %error,
                "cluster: lost Redis; this node goes on with its own provider health and keeps trying"
            ),
        }
        self.set(State::Down);
    }

    fn set(&mut self, state: State) {
        self.state = state;
        let up = state == State::Up;
        self.metrics.set_cluster_connected(up);
        self.status.update(|v| v.connected = up);
    }
}
