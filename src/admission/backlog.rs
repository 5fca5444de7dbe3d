//! The optional short LIFO backlog (`admission.queue_size`, `admission.queue_timeout_ms`). Pure:
//! no actix, time passed in.
//!
//! A request whose class is full waits here instead of getting a 429 at once, for at most the
//! queue timeout; a request that waited that long is shed, never served late. When a slot frees,
//! the **newest** waiter whose class fits gets it: under a sustained overload the oldest waiters
//! are the likeliest to have given up, and serving newest first keeps the wait of those served
//! short (Facebook's adaptive LIFO, and the reason CoDel-style queues drop from the head). A full
//! backlog makes room for a newcomer by shedding its oldest waiter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::machine::Priority;

#[derive(Debug)]
struct Waiter<T> {
    priority: Priority,
    deadline: Instant,
    item: T,
}

/// Requests waiting for a slot, each with its class and something to answer it with (`T`).
#[derive(Debug)]
pub(crate) struct Backlog<T> {
    capacity: usize,
    timeout: Duration,
    /// Oldest at the front, newest at the back.
    waiting: VecDeque<Waiter<T>>,
}

impl<T> Backlog<T> {
    /// A backlog of `capacity` waiters (0 = none: shed at once), each waiting at most `timeout`.
    pub(crate) fn new(capacity: usize, timeout: Duration) -> Self {
        Self {
            capacity,
            timeout,
            waiting: VecDeque::with_capacity(capacity.min(1024)),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queues a request at `now`. When the backlog is full, its oldest waiter is returned: it is
    /// shed to make room. With no backlog at all, the request itself comes back.
    pub(crate) fn push(
        &mut self,
        now: Instant,
        priority: Priority,
        item: T,
    ) -> Option<(Priority, T)> {
        if self.capacity == 0 {
            return Some((priority, item));
        }
        let evicted = if self.waiting.len() >= self.capacity {
            self.waiting.pop_front().map(|w| (w.priority, w.item))
        } else {
            None
        };
        self.waiting.push_back(Waiter {
            priority,
            deadline: now + self.timeout,
            item,
        });
        evicted
    }

    /// Removes the waiters whose time is up at `now`, oldest first.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(Priority, T)> {
        let mut expired = Vec::new();
        // Deadlines grow from front to back (same timeout for all), so the expired are in front.
        while self.waiting.front().is_some_and(|w| w.deadline <= now) {
            if let Some(w) = self.waiting.pop_front() {
                expired.push((w.priority, w.item));
            }
        }
        expired
    }

    /// Removes and returns the waiter `score` ranks highest (`None`: it may not be served now);
    /// the newest of equals. Tenant fairness serves the waiter furthest below its share.
    pub(crate) fn pop_best(
        &mut self,
        score: impl Fn(Priority, &T) -> Option<f64>,
    ) -> Option<(Priority, T)> {
        let mut best: Option<(usize, f64)> = None;
        for (at, w) in self.waiting.iter().enumerate().rev() {
            if let Some(s) = score(w.priority, &w.item) {
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((at, s));
                }
            }
        }
        let (at, _) = best?;
        self.waiting.remove(at).map(|w| (w.priority, w.item))
    }

    /// Removes and returns the newest waiter whose class `fits`.
    pub(crate) fn pop_newest(&mut self, fits: impl Fn(Priority) -> bool) -> Option<(Priority, T)> {
        let at = self.waiting.iter().rposition(|w| fits(w.priority))?;
        self.waiting.remove(at).map(|w| (w.priority, w.item))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_newest_waiter_is_served_first() {
        let t0 = Instant::now();
        let mut b = Backlog::new(4, ms(100));
        for (i, p) in [Priority::Normal, Priority::High, Priority::Normal]
            .into_iter()
            .enumerate()
        {
            assert!(b.push(t0 + ms(i as u64), p, i).is_none());
        }
        assert_eq!(b.pop_newest(|_| true), Some((Priority::Normal, 2)));
        assert_eq!(b.pop_newest(|_| true), Some((Priority::High, 1)));
        assert_eq!(b.pop_newest(|_| true), Some((Priority::Normal, 0)));
        assert_eq!(b.pop_newest(|_| true), None);
    }

    #[test]
    fn a_slot_only_high_may_take_goes_to_the_newest_high_waiter() {
        let t0 = Instant::now();
        let mut b = Backlog::new(4, ms(100));
        b.push(t0, Priority::High, "old high");
        b.push(t0, Priority::Low, "low");
        assert_eq!(
            b.pop_newest(|p| p == Priority::High),
            Some((Priority::High, "old high"))
        );
        assert_eq!(b.pop_newest(|p| p == Priority::High), None);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_best_scored_waiter_is_served_first_and_the_newest_of_equals() {
        let t0 = Instant::now();
        let mut b = Backlog::new(4, ms(100));
        for (i, p) in [
            Priority::Normal,
            Priority::Low,
            Priority::Normal,
            Priority::Low,
        ]
        .into_iter()
        .enumerate()
        {
            b.push(t0, p, i);
        }
        let score = |p: Priority, i: &usize| (p == Priority::Normal).then_some(*i as f64 % 2.0);
        // Both normal waiters score 0: the newer one first.
        assert_eq!(b.pop_best(score), Some((Priority::Normal, 2)));
        assert_eq!(
            b.pop_best(|_, i| Some(-(*i as f64))),
            Some((Priority::Normal, 0))
        );
        assert_eq!(b.pop_best(|_, _| None), None);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn a_full_backlog_sheds_its_oldest_waiter_for_a_newcomer() {
        let t0 = Instant::now();
        let mut b = Backlog::new(2, ms(100));
        assert!(b.push(t0, Priority::Low, 1).is_none());
        assert!(b.push(t0, Priority::Low, 2).is_none());
        assert_eq!(b.push(t0, Priority::High, 3), Some((Priority::Low, 1)));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn waiters_past_their_timeout_leave_and_are_never_served() {
        let t0 = Instant::now();
        let mut b = Backlog::new(8, ms(100));
        b.push(t0, Priority::Normal, 1);
        b.push(t0 + ms(30), Priority::Normal, 2);
        b.push(t0 + ms(60), Priority::Normal, 3);
        assert!(b.expire(t0 + ms(99)).is_empty());
        assert_eq!(
            b.expire(t0 + ms(130)),
            vec![(Priority::Normal, 1), (Priority::Normal, 2)]
        );
        assert_eq!(b.pop_newest(|_| true), Some((Priority::Normal, 3)));
        assert!(b.is_empty());
    }

    #[test]
    fn without_a_backlog_the_request_comes_straight_back() {
        let mut b = Backlog::new(0, ms(100));
        assert!(!b.enabled());
        assert_eq!(
            b.push(Instant::now(), Priority::High, 7),
            Some((Priority::High, 7))
        );
        assert!(b.is_empty());
    }
}
