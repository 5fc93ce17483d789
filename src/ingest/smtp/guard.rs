//! AUTH brute-force limits across connections, counted the way Postfix's anvil and fail2ban
//! count: failed logins per client address and per username within a sliding window
//! (`smtp.auth_failure_window`). Past `smtp.auth_failures_per_ip` the address, past
//! `smtp.auth_failures_per_user` the username, is blocked for `smtp.auth_block_for`: AUTH then
//! answers `454 4.7.0` (RFC 4954 §6) without looking at the password, so guessing learns
//! nothing while blocked, and the right password does not get through either.
//!
//! Promise: memory stays bounded whatever clients send.
//! - Addresses: IPv4 as is (a v4-mapped IPv6 address counts as its IPv4 address), IPv6 by its
//!   /64, the block a single host is normally given. At most [`MAX_ADDRESSES`] are held; past
//!   that, a new address is counted per username only until quiet entries are pruned.
//! - Usernames: only configured SMTP users are counted. An unknown username can never log in,
//!   so it needs no protection, and inventing names cannot grow the table.
//! - Each entry keeps at most `limit` timestamps; entries are pruned once quiet.
//!
//! A successful login resets no count: other addresses' failures keep counting against the
//! user. It does make the address *trusted* for that user for [`TRUSTED_FOR`]: a user block is
//! not applied to it, so someone guessing from elsewhere cannot lock the real application out
//! (address blocks still apply to it).

use crate::config::SmtpConfig;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long an address that logged in as a user stays exempt from that user's blocks.
pub const TRUSTED_FOR: Duration = Duration::from_secs(24 * 3600);
/// Addresses counted at once.
const MAX_ADDRESSES: usize = 100_000;
/// Trusted addresses kept per user.
const MAX_TRUSTED_PER_USER: usize = 1024;
/// Quiet entries are dropped at most this often (and when the address table is full).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What a block applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    User,
}

impl Scope {
    /// The `scope` label of `baton_smtp_auth_blocks_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::User => "user",
        }
    }

    /// The `reason` label of `baton_smtp_auth_failures_total` for an attempt this block refused.
    pub fn refusal_reason(self) -> &'static str {
        match self {
            Scope::Ip => "ip_blocked",
            Scope::User => "user_blocked",
        }
    }
}

/// The limits, from `[smtp]` of the live config (a reload applies to the next attempt).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_ip: u32,
    pub per_user: u32,
    pub window: Duration,
    pub block_for: Duration,
}

impl Limits {
    pub fn from_config(c: &SmtpConfig) -> Limits {
        Limits {
            per_ip: c.auth_failures_per_ip,
            per_user: c.auth_failures_per_user,
            window: c.auth_failure_window.0,
            block_for: c.auth_block_for.0,
        }
    }
}

/// Shared by every session of a listener. std Mutex: held for a few map operations, never
/// across an `.await`; logins are rare next to everything else a session does.
#[derive(Default)]
pub struct AuthGuard {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    addresses: HashMap<IpAddr, Failures>,
    users: HashMap<String, User>,
    last_prune: Option<Instant>,
}

#[derive(Default)]
struct User {
    failures: Failures,
    /// Addresses that logged in as this user, with the time of their last login.
    trusted: HashMap<IpAddr, Instant>,
}

/// Recent failures of one address or user, and the block they led to.
#[derive(Default)]
struct Failures {
    /// Newest last; never more than the limit.
    times: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Failures {
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| now < until)
    }

    /// Counts a failure at `now`; true when it starts a block (the count then starts over).
    /// A failure that raced with the one that started the block changes nothing.
    fn add(&mut self, now: Instant, limit: u32, limits: &Limits) -> bool {
        if self.blocked(now) {
            return false;
        }
        self.forget_old(now, limits.window);
        self.times.push_back(now);
        if self.times.len() < limit as usize {
            return false;
        }
        self.times.clear();
        self.blocked_until = Some(now + limits.block_for);
        true
    }

    fn forget_old(&mut self, now: Instant, window: Duration) {
        while self.times.front().is_some_and(|&t| now.duration_since(t) >= window) {
            self.times.pop_front();
        }
    }

    /// Nothing to remember: not blocked, no failure within the window.
    fn quiet(&self, now: Instant, window: Duration) -> bool {
        !self.blocked(now) && self.times.back().is_none_or(|&t| now.duration_since(t) >= window)
    }
}

/// The address failures are counted under: IPv6 by /64, v4-mapped as IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl AuthGuard {
    /// What blocks a login from `ip` as `username` now, if anything does.
    pub fn blocked(&self, ip: IpAddr, username: &str, now: Instant) -> Option<Scope> {
        let ip = address_key(ip);
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.addresses.get(&ip).is_some_and(|f| f.blocked(now)) {
            return Some(Scope::Ip);
        }
        let user = state.users.get(username)?;
        let trusted = user.trusted.get(&ip).is_some_and(|&at| now.duration_since(at) < TRUSTED_FOR);
        (user.failures.blocked(now) && !trusted).then_some(Scope::User)
    }

    /// Counts a failed login from `ip` as `username` (`configured`: an SMTP user of the live
    /// config). Returns the blocks this failure started.
    pub fn failed(&self, ip: IpAddr, username: &str, configured: bool, limits: &Limits, now: Instant) -> Vec<Scope> {
        let ip = address_key(ip);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.prune_if_due(now, limits.window);
        let mut started = Vec::new();
        if let Some(failures) = state.address_entry(ip)
            && failures.add(now, limits.per_ip, limits)
        {
            started.push(Scope::Ip);
        }
        if configured {
            let user = state.users.entry(username.to_string()).or_default();
            if user.failures.add(now, limits.per_user, limits) {
                started.push(Scope::User);
            }
        }
        started
    }

    /// Records a successful login: `ip` is trusted for `username` from now on.
    pub fn succeeded(&self, ip: IpAddr, username: &str, limits: &Limits, now: Instant) {
        let ip = address_key(ip);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.prune_if_due(now, limits.window);
        let user = state.users.entry(username.to_string()).or_default();
        if user.trusted.len() < MAX_TRUSTED_PER_USER || user.trusted.contains_key(&ip) {
            user.trusted.insert(ip, now);
        }
    }

    /// Addresses and users held now.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.addresses.len(), state.users.len())
    }
}

impl State {
    /// The address's entry, made if there is room.
    fn address_entry(&mut self, ip: IpAddr) -> Option<&mut Failures> {
        if !self.addresses.contains_key(&ip) && self.addresses.len() >= MAX_ADDRESSES {
            return None;
        }
        Some(self.addresses.entry(ip).or_default())
    }

    fn prune_if_due(&mut self, now: Instant, window: Duration) {
        let since = self.last_prune.map_or(Duration::MAX, |at| now.duration_since(at));
        let full = self.addresses.len() >= MAX_ADDRESSES;
        if since >= PRUNE_EVERY || (full && since >= Duration::from_secs(1)) {
            self.prune(now, window);
        }
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        self.last_prune = Some(now);
        self.addresses.retain(|_, f| !f.quiet(now, window));
        self.users.retain(|_, u| {
            u.trusted.retain(|_, &mut at| now.duration_since(at) < TRUSTED_FOR);
            !u.failures.quiet(now, window) || !u.trusted.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { per_ip: 3, per_user: 3, window: Duration::from_secs(300), block_for: Duration::from_secs(900) };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn an_address_is_blocked_after_the_limit_and_released_after_the_block() {
        let g = AuthGuard::default();
        let t = Instant::now();
        let a = ip("192.0.2.1");
        assert!(g.failed(a, "x", false, &LIMITS, t).is_empty());
        assert!(g.failed(a, "y", false, &LIMITS, t + secs(1)).is_empty());
        assert_eq!(g.blocked(a, "app", t + secs(1)), None);
        assert_eq!(g.failed(a, "z", false, &LIMITS, t + secs(2)), [Scope::Ip]);
        assert_eq!(g.blocked(a, "app", t + secs(3)), Some(Scope::Ip), "any username, right password or not");
        assert_eq!(g.blocked(ip("192.0.2.2"), "app", t + secs(3)), None, "other addresses are not affected");
        assert_eq!(g.blocked(a, "app", t + secs(2) + LIMITS.block_for), None, "the block ends");
        // The count started over with the block: one more failure does not block again.
        assert!(g.failed(a, "x", false, &LIMITS, t + secs(2) + LIMITS.block_for).is_empty());
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let g = AuthGuard::default();
        let t = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..10 {
            assert!(g.failed(a, "x", false, &LIMITS, t + LIMITS.window * i).is_empty(), "failure {i}");
        }
        assert!(g.failed(a, "x", false, &LIMITS, t + LIMITS.window * 9 + secs(1)).is_empty());
        assert_eq!(g.failed(a, "x", false, &LIMITS, t + LIMITS.window * 9 + secs(2)), [Scope::Ip]);
    }

    #[test]
    fn a_username_is_blocked_from_every_address_but_trusted_ones() {
        let g = AuthGuard::default();
        let t = Instant::now();
        let long = Limits { block_for: TRUSTED_FOR * 2, ..LIMITS };
        let home = ip("198.51.100.7");
        g.succeeded(home, "app", &long, t);
        assert!(g.failed(ip("192.0.2.1"), "app", true, &long, t + secs(1)).is_empty());
        assert!(g.failed(ip("192.0.2.2"), "app", true, &long, t + secs(2)).is_empty());
        // A login in between resets nothing.
        g.succeeded(home, "app", &long, t + secs(3));
        assert_eq!(g.failed(ip("192.0.2.3"), "app", true, &long, t + secs(4)), [Scope::User]);
        assert_eq!(g.blocked(ip("192.0.2.9"), "app", t + secs(5)), Some(Scope::User), "from a fresh address too");
        assert_eq!(g.blocked(ip("192.0.2.9"), "other", t + secs(5)), None, "other users are not affected");
        assert_eq!(g.blocked(home, "app", t + secs(5)), None, "the address that logged in keeps working");
        assert_eq!(g.blocked(home, "app", t + secs(3) + TRUSTED_FOR), Some(Scope::User), "trust expires");
    }

    #[test]
    fn unknown_usernames_count_per_address_only() {
        let g = AuthGuard::default();
        let t = Instant::now();
        for i in 0..3u8 {
            let from = IpAddr::from([192, 0, 2, i]);
            assert!(g.failed(from, "nobody", false, &LIMITS, t).is_empty());
        }
        assert_eq!(g.sizes(), (3, 0));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let g = AuthGuard::default();
        let t = Instant::now();
        g.failed(ip("2001:db8:1:2::1"), "x", false, &LIMITS, t);
        g.failed(ip("2001:db8:1:2:ffff::9"), "x", false, &LIMITS, t);
        assert_eq!(g.failed(ip("2001:db8:1:2::abcd"), "x", false, &LIMITS, t), [Scope::Ip]);
        assert_eq!(g.blocked(ip("2001:db8:1:3::1"), "x", t), None, "another /64");
        g.failed(ip("192.0.2.1"), "x", false, &LIMITS, t);
        g.failed(ip("::ffff:192.0.2.1"), "x", false, &LIMITS, t);
        assert_eq!(g.failed(ip("192.0.2.1"), "x", false, &LIMITS, t), [Scope::Ip]);
    }

    #[test]
    fn memory_stays_bounded() {
        let g = AuthGuard::default();
        let t = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            g.failed(IpAddr::from(i.to_be_bytes()), "app", false, &LIMITS, t);
        }
        assert_eq!(g.sizes().0, MAX_ADDRESSES, "a full table takes no new addresses");
        // Once the failures are older than the window, the next failure prunes them.
        g.failed(ip("192.0.2.1"), "app", true, &LIMITS, t + LIMITS.window + PRUNE_EVERY);
        assert_eq!(g.sizes(), (1, 1));
    }

    #[test]
    fn label_values_are_in_the_metric_lists() {
        for scope in [Scope::Ip, Scope::User] {
            assert!(crate::metrics::SMTP_AUTH_BLOCK_SCOPES.contains(&scope.as_str()));
            assert!(crate::metrics::SMTP_AUTH_FAILURE_REASONS.contains(&scope.refusal_reason()));
        }
    }
}
