//! A provider's account facts between cluster nodes: what this node tells the others
//! ([`Health::shared_facts`]) and taking what they learned ([`Health::adopt`]). The promise: a
//! fact is taken only when it is newer than this node's own fact of the same kind (the three
//! clocks of `saved.rs`), so the nodes agree whatever order they hear things in; and adopting
//! only ever repeats what the other node said, so nodes do not echo each other.
//!
//! What crosses: an operator's drain and resume (whatever the connection settings: they are
//! the operator's decisions); with the same settings, a suspension and its cooldown end, a
//! rate limit and its Retry-After, a silent provider, the end of each, and sender-domain
//! blocks. What does not: an open circuit or degraded — one node's view of its own path to the
//! provider (a circuit is taken only when a quorum of nodes has it open: `open_circuit`).

use super::saved::{Account, SavedHealth, Settings};
use super::{Health, Inner, ProviderHealth, ProviderState, SenderBlock, instant_of, snapshot};
use crate::spool::record::now_ms;
use std::time::Instant;

/// What [`Health::adopt`] did.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// Something changed on this node (a state, a clock or a sender block).
    pub changed: bool,
    /// What this node tells the others now ([`Health::shared_facts`]), taken with the change.
    pub facts: SavedHealth,
    /// This node knows something the adopted record lacks: the others need to hear it.
    pub ahead: bool,
}

impl Health {
    /// What this node tells the other nodes about `name`'s account: its saved health, also
    /// when there is nothing to keep (then in state `healthy`: the "cleared" marker), without
    /// what is this node's own (an open circuit counts as in rotation). `None`: no such provider.
    pub fn shared_facts(&self, name: &str) -> Option<SavedHealth> {
        let p = self.get(name)?;
        let inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        Some(shared(&inner, Instant::now()))
    }

    /// Takes what node `node` knows of `name`'s account ([`Health::shared_facts`] there), where
    /// it is newer than what this node knows. Changes are saved like any other (they survive a
    /// restart). `None`: no such provider here.
    pub fn adopt(&self, name: &str, node: &str, fact: &SavedHealth) -> Option<Adopted> {
        let p = self.get(name)?;
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let now = Instant::now();
        let settings = if fact.fingerprint == inner.fingerprint { Settings::Same } else { Settings::Other };
        let mut changed = self.adopt_operator(&p, inner, node, fact);
        if settings == Settings::Same {
            changed |= self.adopt_account(&p, inner, node, fact, now);
            changed |= self.adopt_blocks(&p, inner, fact, now);
        }
        let facts = shared(inner, now);
        if changed {
            self.mark_changed(name);
            tracing::info!(
                provider = name,
                node,
                state = inner.state.as_str(),
                "provider health adopted from another node"
            );
        }
        Some(Adopted { changed, ahead: !fact.covers(&facts, settings, now_ms()), facts })
    }

    /// This node's own open circuit on `name`: when it opened and when its next trial is due
    /// (wall-clock ms). `None`: not open.
    pub fn open_circuit(&self, name: &str) -> Option<(u64, u64)> {
        let p = self.get(name)?;
        let inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        (inner.state == ProviderState::Open)
            .then(|| (inner.since_ms, inner.available_at.map_or_else(now_ms, |at| super::wall_ms(at, now))))
    }

    /// Opens `name`'s circuit because `nodes` (a quorum) have it open, until the first of their
    /// trials is due (`until_ms`); from then on it is this node's circuit like any other, closed
    /// by its own half-open trial. Only a provider in rotation here is changed. True: it was.
    pub fn adopt_circuit(&self, name: &str, nodes: &[String], until_ms: u64) -> bool {
        let Some(p) = self.get(name) else { return false };
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        if !matches!(inner.state, ProviderState::Healthy | ProviderState::Degraded) {
            return false;
        }
        inner.available_at = Some(instant_of(until_ms, Instant::now()));
        let reason = format!("circuit open on {} nodes ({})", nodes.len(), nodes.join(", "));
        self.transition(&p, inner, ProviderState::Open, &reason);
        true
    }

    /// A newer drain or resume.
    fn adopt_operator(&self, p: &ProviderHealth, inner: &mut Inner, node: &str, fact: &SavedHealth) -> bool {
        let at = fact.operator_since();
        if at <= inner.operator_ms {
            return false;
        }
        let (drain, drained) = (fact.state == ProviderState::Drained, inner.state == ProviderState::Drained);
        if drain && !drained {
            self.transition(p, inner, ProviderState::Drained, &format!("drained by operator on node {node}"));
            inner.since_ms = fact.since_ms;
        } else if !drain && drained {
            self.transition(p, inner, ProviderState::Healthy, &format!("resumed by operator on node {node}"));
        }
        inner.operator_ms = at;
        true
    }

    /// A newer account state: suspended (with the end of its cooldown), rate limited (with the
    /// end of its Retry-After), silent, or back in rotation. Under a drain only its time is taken: the drain stays until a resume.
    fn adopt_account(
        &self,
        p: &ProviderHealth,
        inner: &mut Inner,
        node: &str,
        fact: &SavedHealth,
        now: Instant,
    ) -> bool {
        let (at, theirs) = (fact.account_since(), Account::of(fact.state));
        if theirs == Account::Hidden || at <= inner.account_ms {
            return false;
        }
        let mine = Account::of(inner.state);
        if matches!(theirs, Account::Suspended | Account::RateLimited) && mine != Account::Hidden {
            inner.available_at = fact.until_ms.map(|ms| instant_of(ms, now));
            inner.trial_started = None;
        }
        if mine != theirs && mine != Account::Hidden {
            match theirs {
                Account::Suspended => self.transition(p, inner, ProviderState::Suspended, &fact.reason),
                Account::RateLimited => self.transition(p, inner, ProviderState::RateLimited, &fact.reason),
                Account::Silent => self.transition(p, inner, ProviderState::Silent, &fact.reason),
                Account::InRotation | Account::Hidden => {
                    self.transition(p, inner, ProviderState::Healthy, &format!("back in rotation on node {node}"))
                }
            }
            if theirs != Account::InRotation {
                inner.since_ms = fact.since_ms;
            }
        }
        inner.account_ms = at;
        true
    }

    /// Sender blocks this node does not have (or that started later, or last clearly
    /// longer), and a newer resume's lifting of every block.
    fn adopt_blocks(&self, p: &ProviderHealth, inner: &mut Inner, fact: &SavedHealth, now: Instant) -> bool {
        let mut changed = false;
        if fact.blocks_cleared_ms > inner.blocks_cleared_ms {
            inner.blocks_cleared_ms = fact.blocks_cleared_ms;
            inner.sender_blocks.retain(|_, b| b.since_ms >= fact.blocks_cleared_ms);
            changed = true;
        }
        let mine = snapshot(inner, now);
        let news: Vec<_> =
            fact.live_blocks(now_ms(), inner.blocks_cleared_ms).filter(|b| mine.learns_from(b)).cloned().collect();
        for b in news {
            let block = SenderBlock { since_ms: b.since_ms, until: instant_of(b.until_ms, now), reason: b.reason };
            inner.sender_blocks.insert(b.domain, block);
            changed = true;
        }
        if changed {
            self.metrics.set_sender_blocked(&p.name, &inner.blocked_domains());
        }
        changed
    }
}

/// [`snapshot`] without this node's own: in rotation whatever the circuit says.
fn shared(inner: &Inner, now: Instant) -> SavedHealth {
    let mut facts = snapshot(inner, now);
    if inner.state == ProviderState::RateLimited {
        facts.state = ProviderState::RateLimited; // not kept across a restart, but shared
    }
    if Account::of(facts.state) == Account::InRotation {
        facts.state = ProviderState::Healthy;
    }
    if !matches!(facts.state, ProviderState::Suspended | ProviderState::RateLimited) {
        facts.until_ms = None;
    }
    facts.open_for_ms = 0;
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthOverride, HealthSettings};
    use crate::health::Trial;
    use crate::metrics::Metrics;
    use crate::outcome::{OutcomeClass, SendReport};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A node whose provider "p" has connection settings `fingerprint`.
    fn node(fingerprint: &str) -> Health {
        let mut settings = HealthSettings::resolve(&HealthOverride::default(), &HealthOverride::default());
        settings.account_cooldown = Duration::from_secs(60);
        let h = Health::new(Arc::new(Metrics::new()));
        let inner = Mutex::new(Inner::new(settings, true, fingerprint.into()));
        h.providers.insert("p".into(), Arc::new(ProviderHealth { name: "p".into(), inner }));
        h
    }

    fn fail(h: &Health, class: OutcomeClass, domain: &str) {
        h.record("p", domain, &SendReport::failed(class, 1, "refused"), Trial::No);
    }

    /// `to` adopts what `from` shares; returns what happened.
    fn tell(from: &Health, from_name: &str, to: &Health) -> Adopted {
        to.adopt("p", from_name, &from.shared_facts("p").unwrap()).unwrap()
    }

    /// Waits past the current millisecond, so the next fact is strictly newer.
    fn tick() {
        std::thread::sleep(Duration::from_millis(2));
    }

    #[test]
    fn a_suspension_is_adopted_with_its_cooldown_and_not_echoed() {
        let (a, b) = (node("f"), node("f"));
        fail(&a, OutcomeClass::Account, "example.com");
        let adopted = tell(&a, "a", &b);
        assert!(adopted.changed && !adopted.ahead);
        assert_eq!(b.state("p"), Some(ProviderState::Suspended));
        let status = &b.statuses()[0];
        assert_eq!(status.since_ms, a.statuses()[0].since_ms);
        assert!(status.next_trial_in.unwrap() > Duration::from_secs(50), "the cooldown is a's");
        let again = tell(&a, "a", &b);
        assert!(!again.changed && !again.ahead, "nothing new the second time");
        let back = tell(&b, "b", &a);
        assert!(!back.changed && !back.ahead, "a hears nothing new from b");
    }

    #[test]
    fn an_open_circuit_stays_on_its_node() {
        let (a, b) = (node("f"), node("f"));
        for _ in 0..3 {
            fail(&a, OutcomeClass::Transient, "example.com");
        }
        assert_eq!(a.state("p"), Some(ProviderState::Open));
        assert_eq!(a.shared_facts("p").unwrap().state, ProviderState::Healthy);
        assert!(!tell(&a, "a", &b).changed);
        assert_eq!(b.state("p"), Some(ProviderState::Healthy));
        // A suspension learned elsewhere is news to the open node, and its end too.
        fail(&b, OutcomeClass::Account, "example.com");
        tell(&b, "b", &a);
        assert_eq!(a.state("p"), Some(ProviderState::Suspended));
        tick();
        b.resume("p");
        tell(&b, "b", &a);
        assert_eq!(a.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn drain_and_resume_cross_connection_settings_but_suspensions_do_not() {
        let (a, b) = (node("f"), node("other"));
        a.drain("p");
        assert!(tell(&a, "a", &b).changed);
        assert_eq!(b.state("p"), Some(ProviderState::Drained));
        tick();
        b.resume("p");
        tell(&b, "b", &a);
        assert_eq!(a.state("p"), Some(ProviderState::Healthy));
        fail(&a, OutcomeClass::Account, "example.com");
        let adopted = tell(&a, "a", &b);
        assert!(!adopted.changed && !adopted.ahead, "another account: nothing to take, nothing to say");
        assert_eq!(b.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn a_drain_is_not_undone_by_a_node_that_never_heard_of_it() {
        let (a, b, c) = (node("f"), node("f"), node("f"));
        a.drain("p");
        tell(&a, "a", &b);
        tick();
        // c learns a suspension and a sender block later, without having seen the drain.
        fail(&c, OutcomeClass::Account, "example.com");
        fail(&c, OutcomeClass::SenderUnverified, "b.example");
        let adopted = tell(&c, "c", &b);
        assert!(adopted.changed, "the block and the account's time are news");
        assert!(adopted.ahead, "c has not heard of the drain: b says so");
        assert_eq!(b.state("p"), Some(ProviderState::Drained), "only a resume ends a drain");
        assert_eq!(b.statuses()[0].sender_blocks[0].domain, "b.example");
        tell(&b, "b", &c);
        assert_eq!(c.state("p"), Some(ProviderState::Drained));
        tick();
        c.resume("p");
        for node in [&a, &b] {
            tell(&c, "c", node);
            assert_eq!(node.state("p"), Some(ProviderState::Healthy));
            assert!(node.statuses()[0].sender_blocks.is_empty(), "a resume lifts the blocks everywhere");
        }
    }

    #[test]
    fn the_newer_fact_wins_whatever_the_order() {
        let (a, b, c) = (node("f"), node("f"), node("f"));
        fail(&a, OutcomeClass::Account, "example.com");
        let suspended = a.shared_facts("p").unwrap();
        tick();
        a.resume("p");
        let resumed = a.shared_facts("p").unwrap();
        b.adopt("p", "a", &suspended);
        b.adopt("p", "a", &resumed);
        c.adopt("p", "a", &resumed);
        assert!(!c.adopt("p", "a", &suspended).unwrap().changed, "older: ignored");
        assert_eq!(b.state("p"), Some(ProviderState::Healthy));
        assert_eq!(c.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn adopted_facts_survive_a_restart() {
        let (a, b) = (node("f"), node("f"));
        a.drain("p");
        tell(&a, "a", &b);
        let restarted = node("f");
        restarted.restore("p", &b.saved("p").unwrap());
        assert_eq!(restarted.state("p"), Some(ProviderState::Drained));
        assert!(!tell(&a, "a", &restarted).changed, "it remembers when the drain was");
    }
}
