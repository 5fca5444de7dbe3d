//! The retry budget, after Finagle's `RetryBudget` and linkerd's: every request deposits
//! `ratio` of a token, every retry or hedge withdraws one, and a reserve of `min_per_second` ×
//! `ttl` tokens lets a client that sends little still retry. Deposits and withdrawals count for
//! `ttl`, then expire, so the budget follows recent traffic. Pure: time is an argument.

use std::collections::VecDeque;
use std::time::Instant;

use crate::settings::BudgetConfig;

/// One second's deposits and withdrawals.
#[derive(Debug, Clone, Copy)]
struct Slot {
    second: u64,
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct RetryBudget {
    config: BudgetConfig,
    /// The origin of the seconds counted in `slots`.
    epoch: Instant,
    /// One slot per second with activity, oldest first, none older than `ttl`.
    slots: VecDeque<Slot>,
    deposits: u64,
    withdrawals: u64,
}

impl RetryBudget {
    pub(crate) fn new(config: BudgetConfig, now: Instant) -> Self {
        Self {
            config,
            epoch: now,
            slots: VecDeque::new(),
            deposits: 0,
            withdrawals: 0,
        }
    }

    /// A request was made: it earns `ratio` of a retry.
    pub(crate) fn deposit(&mut self, now: Instant) {
        self.current(now).deposits += 1;
        self.deposits += 1;
    }

    /// Takes one token for a retry or a hedge, if there is one.
    pub(crate) fn try_withdraw(&mut self, now: Instant) -> bool {
        self.expire(now);
        if self.balance() < 1.0 {
            return false;
        }
        self.current(now).withdrawals += 1;
        self.withdrawals += 1;
        true
    }

    /// Tokens left: the reserve plus `ratio` per request, less the retries, over the last `ttl`
    /// (as of the last call; `expire` brings it up to date).
    pub(crate) fn balance(&self) -> f64 {
        let reserve = f64::from(self.config.min_per_second) * self.config.ttl.as_secs_f64();
        reserve + self.config.ratio * self.deposits as f64 - self.withdrawals as f64
    }

    /// Forgets what is older than `ttl`.
    pub(crate) fn expire(&mut self, now: Instant) {
        let second = self.second(now);
        let ttl = self.config.ttl.as_secs().max(1);
        while let Some(oldest) = self.slots.front() {
            if oldest.second + ttl > second {
                break;
            }
            self.deposits -= oldest.deposits;
            self.withdrawals -= oldest.withdrawals;
            self.slots.pop_front();
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn current(&mut self, now: Instant) -> &mut Slot {
        self.expire(now);
        let second = self.second(now);
        if self.slots.back().is_none_or(|s| s.second != second) {
            self.slots.push_back(Slot {
                second,
                deposits: 0,
                withdrawals: 0,
            });
        }
        let last = self.slots.len() - 1;
        &mut self.slots[last]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CONFIG: BudgetConfig = BudgetConfig {
        ratio: 0.2,
        min_per_second: 0,
        ttl: Duration::from_secs(10),
    };

    fn withdrawals(b: &mut RetryBudget, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| b.try_withdraw(now)).count()
    }

    #[test]
    fn each_request_earns_a_fifth_of_a_retry() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(CONFIG, t0);
        for _ in 0..100 {
            b.deposit(t0);
        }
        // 100 requests at 0.2: 20 retries, not one more.
        assert_eq!(withdrawals(&mut b, t0, 50), 20);
    }

    #[test]
    fn the_reserve_allows_min_per_second_for_ttl_without_traffic() {
        let t0 = Instant::now();
        let config = BudgetConfig {
            min_per_second: 10,
            ..CONFIG
        };
        let mut b = RetryBudget::new(config, t0);
        assert_eq!(withdrawals(&mut b, t0, 500), 100);
        // Spent: nothing more until the withdrawals expire, ttl later.
        assert_eq!(withdrawals(&mut b, t0 + Duration::from_secs(9), 10), 0);
        assert_eq!(withdrawals(&mut b, t0 + Duration::from_secs(10), 500), 100);
    }

    #[test]
    fn deposits_expire_after_ttl() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(CONFIG, t0);
        for _ in 0..50 {
            b.deposit(t0);
        }
        // Ten seconds later the 50 requests no longer earn anything.
        assert_eq!(withdrawals(&mut b, t0 + Duration::from_secs(10), 5), 0);
        let mut b = RetryBudget::new(CONFIG, t0);
        for _ in 0..50 {
            b.deposit(t0);
        }
        // Nine seconds later they still do.
        assert_eq!(withdrawals(&mut b, t0 + Duration::from_secs(9), 20), 10);
    }

    #[test]
    fn the_balance_is_what_is_left() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(
            BudgetConfig {
                min_per_second: 1,
                ..CONFIG
            },
            t0,
        );
        assert_eq!(b.balance(), 10.0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert!((b.balance() - 12.0).abs() < 1e-9);
        assert!(b.try_withdraw(t0));
        assert!((b.balance() - 11.0).abs() < 1e-9);
    }
}
