//! Slowing down password guessing, before a guess is checked.
//!
//! Failures are counted per address (IPv6 by its /64, what one host is usually given) and per
//! user name. Past [`FREE_FAILURES`] in a window, every attempt under that address or name that
//! is not already remembered as right waits for a turn before bcrypt sees it: turns are spaced
//! by a delay that doubles with each failure up to [`MAX_DELAY`], so guesses per minute are
//! bounded however many run in parallel or are abandoned early. An attempt whose turn is more
//! than [`MAX_QUEUE`] away is refused without being checked (429). An attempt that takes a turn
//! counts as a failure whatever its answer, so guesses abandoned while they wait lengthen the
//! delay too. Counts and turns are taken under one lock, so parallel failures are all counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures within this window of the last one count towards slowing down.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failures answered without waiting before the delays begin.
pub(super) const FREE_FAILURES: u32 = 3;
/// The first delay between turns.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between turns: under 10 guesses a minute once it is reached.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(8);
/// How far ahead a turn may be before an attempt is refused unchecked.
const MAX_QUEUE: Duration = Duration::from_secs(30);
/// Counters kept before the forgotten ones are pruned.
const MAX_KEYS: usize = 100_000;

/// Who an attempt is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    User(String),
}

#[derive(Debug)]
struct Counter {
    failures: u32,
    last_failure: Instant,
    /// When the next attempt may be checked.
    next_turn: Instant,
}

impl Counter {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.last_failure) < FAILURE_WINDOW
    }

    fn delay(&self) -> Option<Duration> {
        let over = self.failures.checked_sub(FREE_FAILURES + 1)?;
        Some((FIRST_DELAY * (1u32 << over.min(16))).min(MAX_DELAY))
    }
}

/// When an attempt may be checked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Turn {
    Now,
    /// Wait this long first.
    After(Duration),
    /// Too many queued: refused unchecked; retry after this long.
    Refused(Duration),
}

#[derive(Debug, Default)]
pub(super) struct Throttle {
    counters: Mutex<HashMap<Key, Counter>>,
}

fn keys(peer: Option<IpAddr>, user: &str) -> Vec<Key> {
    let mut keys = vec![Key::User(user.to_owned())];
    if let Some(ip) = peer {
        keys.push(Key::Addr(match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => v4,
        }));
    }
    keys
}

impl Throttle {
    /// Takes a turn for an attempt by `user` from `peer`.
    pub(super) fn turn(&self, peer: Option<IpAddr>, user: &str) -> Turn {
        self.turn_at(peer, user, Instant::now())
    }

    fn turn_at(&self, peer: Option<IpAddr>, user: &str, now: Instant) -> Turn {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let keys = keys(peer, user);
        let slowed: Vec<(&Key, Duration)> = keys
            .iter()
            .filter_map(|k| {
                let c = counters.get(k).filter(|c| c.live(now))?;
                Some((k, c.delay()?))
            })
            .collect();
        if slowed.is_empty() {
            return Turn::Now;
        }
        let at = slowed
            .iter()
            .filter_map(|(k, _)| counters.get(*k).map(|c| c.next_turn))
            .fold(now, Instant::max);
        let wait = at - now;
        if wait > MAX_QUEUE {
            return Turn::Refused(wait);
        }
        for (k, delay) in slowed {
            if let Some(c) = counters.get_mut(k) {
                // An attempt made while slowed counts as a failure whatever its answer, so
                // guesses abandoned before they are checked still lengthen the delay.
                c.failures += 1;
                c.last_failure = now;
                c.next_turn = at + delay.max(c.delay().unwrap_or(delay));
            }
        }
        if wait.is_zero() {
            Turn::Now
        } else {
            Turn::After(wait)
        }
    }

    /// Counts a failed attempt by `user` from `peer`.
    pub(super) fn failed(&self, peer: Option<IpAddr>, user: &str) {
        self.failed_at(peer, user, Instant::now());
    }

    fn failed_at(&self, peer: Option<IpAddr>, user: &str, now: Instant) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if counters.len() >= MAX_KEYS {
            counters.retain(|_, c| c.live(now));
            if counters.len() >= MAX_KEYS {
                // Flooded with live keys: the oldest go first.
                let mut ages: Vec<Instant> = counters.values().map(|c| c.last_failure).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                counters.retain(|_, c| c.last_failure > cut);
            }
        }
        for key in keys(peer, user) {
            let c = counters.entry(key).or_insert(Counter {
                failures: 0,
                last_failure: now,
                next_turn: now,
            });
            if !c.live(now) {
                c.failures = 0;
                c.next_turn = now;
            }
            c.failures += 1;
            c.last_failure = now;
            if let Some(delay) = c.delay() {
                c.next_turn = c.next_turn.max(now + delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn turns_are_spaced_after_a_burst_however_many_ask_at_once() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.turn_at(HOME, "ci", now), Turn::Now);
            t.failed_at(HOME, "ci", now);
        }
        // The free failures are spent: the next attempt is checked at once (no delay yet),
        // and once it fails too, parallel attempts queue one turn apart.
        assert_eq!(t.turn_at(HOME, "ci", now), Turn::Now);
        for _ in 0..8 {
            t.failed_at(HOME, "ci", now);
        }
        // Past the doubling, turns are MAX_DELAY apart: 100 attempts in one instant get at most
        // MAX_QUEUE / MAX_DELAY + 1 turns, the rest are refused unchecked.
        let turns = (0..100)
            .filter(|_| !matches!(t.turn_at(HOME, "ci", now), Turn::Refused(_)))
            .count();
        assert!(
            turns as u32 <= MAX_QUEUE.as_secs() as u32 / MAX_DELAY.as_secs() as u32 + 1,
            "{turns}"
        );
        // Another user from the same address waits as well, and the same user from elsewhere.
        let elsewhere = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        assert!(matches!(t.turn_at(HOME, "bob", now), Turn::Refused(_)));
        assert!(matches!(t.turn_at(elsewhere, "ci", now), Turn::Refused(_)));
        assert_eq!(t.turn_at(elsewhere, "bob", now), Turn::Now);
        // A window after the last failure, all is forgotten.
        let later = now + FAILURE_WINDOW + MAX_QUEUE * 2;
        assert_eq!(t.turn_at(HOME, "ci", later), Turn::Now);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..12 {
            t.failed_at(Some(a), &format!("u{i}"), now);
        }
        assert_ne!(t.turn_at(Some(b), "x", now), Turn::Now);
        assert_eq!(t.turn_at(Some(other), "x", now), Turn::Now);
    }
}
