//! Fairness between tenants (`admission.tenant_header`): the rule that shares the in-flight limit
//! among callers, and the per-tenant quota. Pure: no actix, time passed in.
//!
//! **The rule.** A tenant's *fair share* of a class's ceiling is that ceiling divided by the
//! tenants active now (with requests in flight, or seen within [`ACTIVE_WINDOW`]). For a request
//! of tenant `t` and class `p`:
//! - a slot of `p` is free: admitted, whatever `t` holds (work-conserving: a tenant alone may use
//!   the whole pool, and no slot stands idle for fairness' sake);
//! - the class is full and `t` holds at least its share: shed at once (`tenant_share`); a tenant
//!   over its share never waits;
//! - the class is full and `t` holds less than its share: it waits briefly (the backlog's
//!   timeout) for the next freed slot, and a freed slot goes to the waiter whose tenant is
//!   furthest below its share ([`Tenants::deficit`]; the newest of equals).
//!
//! Priorities keep their meaning inside a tenant: the ceilings per class are the same as without
//! fairness, and a tenant's share of a lower class's ceiling is smaller.
//!
//! **The quota** (`tenant_rate_per_second`, `tenant_burst`): a token bucket per tenant, full when
//! the tenant is first seen. A token is taken when a request is admitted, so the admitted rate is
//! held to the quota; a request arriving with less than one token is refused with the wait until
//! the next one.
//!
//! **Memory.** At most `max_tenants` named tenants are tracked; beyond it new tenants share one
//! overflow tenant. A tenant is forgotten once it is idle (nothing in flight, not seen for a
//! window) and its bucket is full again, so forgetting never hands out fresh tokens. Every
//! decision does a bounded amount of work ([`SWEEP_PER_DECISION`]), whatever the number tracked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::settings::{FairConfig, Quota};

/// How long a tenant counts as active after its last request (besides while it has requests in
/// flight). Checked lazily: a tenant stops counting between one and two windows after its last
/// request.
pub(crate) const ACTIVE_WINDOW: Duration = Duration::from_secs(1);

/// Idle tenants looked at per decision (the actor also sweeps them all once a second).
pub(crate) const SWEEP_PER_DECISION: usize = 4;

/// A tracked tenant's slot. Stable while the tenant has requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TenantId(u32);

impl TenantId {
    /// Requests without the header.
    pub(crate) const ANONYMOUS: TenantId = TenantId(0);
    /// New tenants beyond `max_tenants`.
    pub(crate) const OVERFLOW: TenantId = TenantId(1);
}

/// What the rule says of one request when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A slot of its class is free.
    Admit,
    /// Its class is full and its tenant holds less than its share: wait for the next freed slot.
    Wait,
    /// Its class is full and its tenant holds its share or more: shed (`tenant_share`).
    OverShare,
}

#[derive(Debug)]
struct Tenant {
    /// The header's value (empty for the anonymous and overflow tenants, and free slots).
    key: Box<str>,
    inflight: u32,
    /// Requests waiting for a slot: a tenant with any is not idle (so never forgotten under them).
    waiting: u32,
    last_seen: Instant,
    active: bool,
    /// Whether it has an entry in [`Tenants::checks`].
    checked: bool,
    /// Idle, kept only until its bucket is full again, with an entry in [`Tenants::refills`] of
    /// this generation (bumped when it comes back, so that entry is stale).
    parked: bool,
    generation: u32,
    /// The bucket's tokens at `refilled` (below zero after admissions from the backlog beyond it).
    tokens: f64,
    refilled: Instant,
}

impl Tenant {
    fn new(key: Box<str>, now: Instant, quota: Option<Quota>) -> Self {
        Self {
            key,
            inflight: 0,
            waiting: 0,
            last_seen: now,
            active: false,
            checked: false,
            parked: false,
            generation: 0,
            tokens: quota.map_or(0.0, |q| q.burst),
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant, q: Quota) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * q.rate).min(q.burst);
        self.refilled = now;
    }
}

/// The tenants tracked, their in-flight counts, activity and buckets.
#[derive(Debug)]
pub(crate) struct Tenants {
    config: FairConfig,
    window: Duration,
    /// Named tenants → their slot.
    index: HashMap<Box<str>, u32>,
    /// Slot 0 is the anonymous tenant, 1 the overflow tenant; free slots are in `free`.
    slots: Vec<Tenant>,
    free: Vec<u32>,
    /// Tenants active now.
    active: u32,
    /// When to look at a tenant again (oldest first; times never decrease).
    checks: VecDeque<(Instant, u32)>,
    /// Idle tenants kept until their bucket is full: when it will be, the slot and generation.
    refills: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Requests sent to the overflow tenant since [`Tenants::take_overflowed`].
    overflowed: u64,
}

impl Tenants {
    pub(crate) fn new(config: &FairConfig, now: Instant) -> Self {
        Self::with_window(config, now, ACTIVE_WINDOW)
    }

    pub(crate) fn with_window(config: &FairConfig, now: Instant, window: Duration) -> Self {
        Self {
            config: *config,
            window,
            index: HashMap::new(),
            slots: vec![
                Tenant::new("".into(), now, config.quota),
                Tenant::new("".into(), now, config.quota),
            ],
            free: Vec::new(),
            active: 0,
            checks: VecDeque::new(),
            refills: BinaryHeap::new(),
            overflowed: 0,
        }
    }

    /// The tenant of a request arriving at `now` with header value `key` (`None`: no header),
    /// counted as seen. A new tenant beyond `max_tenants` gets the overflow tenant.
    pub(crate) fn enter(&mut self, now: Instant, key: Option<&str>) -> TenantId {
        self.sweep(now, SWEEP_PER_DECISION);
        let id = match key {
            None => TenantId::ANONYMOUS,
            Some(key) => match self.index.get(key) {
                Some(&slot) => TenantId(slot),
                None if self.index.len() >= self.config.max_tenants => {
                    self.overflowed += 1;
                    TenantId::OVERFLOW
                }
                None => self.add(key, now),
            },
        };
        let t = &mut self.slots[id.0 as usize];
        t.last_seen = now;
        if t.parked {
            t.parked = false;
            t.generation = t.generation.wrapping_add(1);
        }
        if !t.active {
            t.active = true;
            self.active += 1;
        }
        if !t.checked {
            t.checked = true;
            self.checks.push_back((now, id.0));
        }
        id
    }

    fn add(&mut self, key: &str, now: Instant) -> TenantId {
        let mut tenant = Tenant::new(key.into(), now, self.config.quota);
        let slot = match self.free.pop() {
            Some(slot) => {
                // A later generation, so no stale refill entry of the slot's last tenant matches.
                tenant.generation = self.slots[slot as usize].generation.wrapping_add(1);
                self.slots[slot as usize] = tenant;
                slot
            }
            None => {
                self.slots.push(tenant);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(key.into(), slot);
        TenantId(slot)
    }

    /// Looks at up to `max` tenants whose check is due at `now`: one idle for a window stops
    /// counting as active, and is forgotten once its bucket is full again (an idle tenant whose
    /// bucket is refilling is looked at again only when it will be full).
    pub(crate) fn sweep(&mut self, now: Instant, max: usize) {
        for _ in 0..max {
            if let Some(&(at, slot)) = self.checks.front() {
                if now.saturating_duration_since(at) >= self.window {
                    self.checks.pop_front();
                    self.check(now, slot);
                    continue;
                }
            }
            match self.refills.peek() {
                Some(&Reverse((at, slot, generation))) if at <= now => {
                    self.refills.pop();
                    let t = &self.slots[slot as usize];
                    if t.parked && t.generation == generation {
                        self.park_or_forget(now, slot);
                    }
                }
                _ => return,
            }
        }
    }

    /// A due check of `slot`: still busy (checked again a window later) or idle.
    fn check(&mut self, now: Instant, slot: u32) {
        let window = self.window;
        let t = &mut self.slots[slot as usize];
        t.checked = false;
        let idle = t.inflight == 0
            && t.waiting == 0
            && now.saturating_duration_since(t.last_seen) >= window;
        if !idle {
            t.checked = true;
            self.checks.push_back((now, slot));
            return;
        }
        if t.active {
            t.active = false;
            self.active -= 1;
        }
        if slot > TenantId::OVERFLOW.0 {
            self.park_or_forget(now, slot);
        }
    }

    /// An idle named tenant: forgotten if its bucket is full (or there is no quota), else kept
    /// until it will be.
    fn park_or_forget(&mut self, now: Instant, slot: u32) {
        let t = &mut self.slots[slot as usize];
        let until_full = match self.config.quota {
            None => Duration::ZERO,
            Some(q) => {
                t.refill(now, q);
                Duration::from_secs_f64(((q.burst - t.tokens).max(0.0) / q.rate).min(86_400.0))
            }
        };
        if until_full.is_zero() {
            t.parked = false;
            let key = std::mem::take(&mut t.key);
            self.index.remove(&key);
            self.free.push(slot);
        } else {
            t.parked = true;
            self.refills
                .push(Reverse((now + until_full, slot, t.generation)));
        }
    }

    /// The quota: `Ok` when `id` has a token at `now` (taken on admission, [`Tenants::admitted`]),
    /// else how long until it has one.
    pub(crate) fn has_token(&mut self, now: Instant, id: TenantId) -> Result<(), Duration> {
        let Some(q) = self.config.quota else {
            return Ok(());
        };
        let t = &mut self.slots[id.0 as usize];
        t.refill(now, q);
        if t.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - t.tokens) / q.rate).min(86_400.0),
            ))
        }
    }

    /// The rule for a request of `id` when `inflight` requests hold slots and its class's
    /// ceiling is `ceiling`.
    pub(crate) fn judge(&self, id: TenantId, inflight: u32, ceiling: u32) -> Verdict {
        if inflight < ceiling {
            Verdict::Admit
        } else if self.deficit(id, ceiling) > 0.0 {
            Verdict::Wait
        } else {
            Verdict::OverShare
        }
    }

    /// The fair share of a class whose ceiling is `ceiling`: divided among the active tenants.
    pub(crate) fn share(&self, ceiling: u32) -> f64 {
        f64::from(ceiling) / f64::from(self.active.max(1))
    }

    /// How far `id` is below its share of `ceiling` (negative: above it).
    pub(crate) fn deficit(&self, id: TenantId, ceiling: u32) -> f64 {
        self.share(ceiling) - f64::from(self.slots[id.0 as usize].inflight)
    }

    /// `id` was given a slot at `now`: counted, and a token taken when there is a quota.
    pub(crate) fn admitted(&mut self, now: Instant, id: TenantId) {
        let quota = self.config.quota;
        let t = &mut self.slots[id.0 as usize];
        t.inflight += 1;
        if let Some(q) = quota {
            t.refill(now, q);
            t.tokens -= 1.0;
        }
    }

    /// A request of `id` waits for a slot (in the backlog).
    pub(crate) fn waits(&mut self, id: TenantId) {
        self.slots[id.0 as usize].waiting += 1;
    }

    /// A request of `id` stopped waiting (served, timed out or made room).
    pub(crate) fn stops_waiting(&mut self, id: TenantId) {
        let t = &mut self.slots[id.0 as usize];
        t.waiting = t.waiting.saturating_sub(1);
    }

    /// `id` gave a slot back.
    pub(crate) fn released(&mut self, id: TenantId) {
        let t = &mut self.slots[id.0 as usize];
        t.inflight = t.inflight.saturating_sub(1);
    }

    /// Slots `id` holds.
    #[cfg(test)]
    pub(crate) fn holds(&self, id: TenantId) -> u32 {
        self.slots[id.0 as usize].inflight
    }

    /// The tenant's name as the log and the state show it.
    pub(crate) fn name(&self, id: TenantId) -> &str {
        match id {
            TenantId::ANONYMOUS => "(anonymous)",
            TenantId::OVERFLOW => "(overflow)",
            TenantId(slot) => &self.slots[slot as usize].key,
        }
    }

    /// Tenants active now.
    pub(crate) fn active(&self) -> u32 {
        self.active
    }

    /// Named tenants tracked now (at most `max_tenants`).
    pub(crate) fn tracked(&self) -> usize {
        self.index.len()
    }

    /// Requests that went to the overflow tenant since the last call.
    pub(crate) fn take_overflowed(&mut self) -> u64 {
        std::mem::take(&mut self.overflowed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::admission::backlog::Backlog;
    use crate::admission::machine::{Admission, Limits, PermitToken, Priority};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(max_tenants: usize, quota: Option<Quota>) -> FairConfig {
        FairConfig {
            header: "x-tenant",
            max_tenants,
            quota,
        }
    }

    #[test]
    fn a_tenant_alone_may_use_the_whole_pool() {
        let t0 = Instant::now();
        let mut t = Tenants::new(&config(10, None), t0);
        let a = t.enter(t0, Some("a"));
        for inflight in 0..50 {
            assert_eq!(t.judge(a, inflight, 50), Verdict::Admit);
            t.admitted(t0, a);
        }
        assert_eq!(t.holds(a), 50);
        // Full: alone, its share is the whole pool, which it holds.
        assert_eq!(t.judge(a, 50, 50), Verdict::OverShare);
    }

    #[test]
    fn when_full_the_tenant_over_its_share_is_shed_and_the_one_under_it_waits() {
        let t0 = Instant::now();
        let mut t = Tenants::new(&config(10, None), t0);
        let a = t.enter(t0, Some("a"));
        for _ in 0..48 {
            t.admitted(t0, a);
        }
        let b = t.enter(t0, Some("b"));
        t.admitted(t0, b);
        t.admitted(t0, b);
        // Two active tenants: a share of 25 each.
        assert_eq!(t.share(50), 25.0);
        assert_eq!(t.judge(a, 50, 50), Verdict::OverShare);
        assert_eq!(t.judge(b, 50, 50), Verdict::Wait);
        assert!(t.deficit(b, 50) > t.deficit(a, 50));
    }

    #[test]
    fn priorities_keep_their_meaning_inside_a_tenant() {
        let t0 = Instant::now();
        let mut t = Tenants::new(&config(10, None), t0);
        let a = t.enter(t0, Some("a"));
        let _b = t.enter(t0, Some("b"));
        for _ in 0..20 {
            t.admitted(t0, a);
        }
        // a holds 20: under its share of high's 50 (25), over its share of low's 35 (17.5).
        assert_eq!(t.judge(a, 50, 50), Verdict::Wait);
        assert_eq!(t.judge(a, 35, 35), Verdict::OverShare);
    }

    #[test]
    fn a_tenant_stops_counting_as_active_after_a_window_idle_and_is_then_forgotten() {
        let t0 = Instant::now();
        let mut t = Tenants::with_window(&config(10, None), t0, ms(100));
        let a = t.enter(t0, Some("a"));
        t.admitted(t0, a);
        t.enter(t0, Some("b"));
        assert_eq!((t.active(), t.tracked()), (2, 2));
        // b idle for a window: no longer active, forgotten; a has a request in flight.
        t.sweep(t0 + ms(150), usize::MAX);
        assert_eq!((t.active(), t.tracked()), (1, 1));
        t.released(a);
        t.sweep(t0 + ms(300), usize::MAX);
        assert_eq!((t.active(), t.tracked()), (0, 0));
        // Seen again: a fresh slot, counted again.
        let a2 = t.enter(t0 + ms(310), Some("a"));
        assert_eq!(t.holds(a2), 0);
        assert_eq!(t.active(), 1);
    }

    #[test]
    fn a_tenant_with_a_request_waiting_is_never_forgotten_under_it() {
        let t0 = Instant::now();
        let mut t = Tenants::with_window(&config(10, None), t0, ms(100));
        let a = t.enter(t0, Some("a"));
        t.waits(a);
        // Waiting longer than the window (a long queue_timeout_ms): still tracked, still active.
        t.sweep(t0 + ms(500), usize::MAX);
        assert_eq!((t.active(), t.tracked()), (1, 1));
        t.stops_waiting(a);
        t.sweep(t0 + ms(700), usize::MAX);
        assert_eq!((t.active(), t.tracked()), (0, 0));
    }

    #[test]
    fn beyond_max_tenants_new_tenants_share_the_overflow_tenant() {
        let t0 = Instant::now();
        let mut t = Tenants::new(&config(2, None), t0);
        let a = t.enter(t0, Some("a"));
        let b = t.enter(t0, Some("b"));
        let c = t.enter(t0, Some("c"));
        let d = t.enter(t0, Some("d"));
        assert_ne!(a, b);
        assert_eq!(c, TenantId::OVERFLOW);
        assert_eq!(d, TenantId::OVERFLOW);
        assert_eq!(t.name(c), "(overflow)");
        assert_eq!(t.take_overflowed(), 2);
        assert_eq!(t.take_overflowed(), 0);
        // Known tenants keep their own slot.
        assert_eq!(t.enter(t0, Some("a")), a);
        assert_eq!(t.name(a), "a");
        assert_eq!(t.tracked(), 2);
    }

    #[test]
    fn requests_without_the_header_share_the_anonymous_tenant() {
        let t0 = Instant::now();
        let mut t = Tenants::new(&config(10, None), t0);
        assert_eq!(t.enter(t0, None), TenantId::ANONYMOUS);
        assert_eq!(t.enter(t0, None), TenantId::ANONYMOUS);
        assert_eq!(t.name(TenantId::ANONYMOUS), "(anonymous)");
        assert_eq!(t.active(), 1);
    }

    #[test]
    fn the_quota_holds_a_tenant_to_its_rate_after_the_burst() {
        let t0 = Instant::now();
        let quota = Quota {
            rate: 10.0,
            burst: 5.0,
        };
        let mut t = Tenants::new(&config(10, Some(quota)), t0);
        let a = t.enter(t0, Some("a"));
        for _ in 0..5 {
            assert!(t.has_token(t0, a).is_ok());
            t.admitted(t0, a);
            t.released(a);
        }
        // Empty: the next token in 100 ms.
        let wait = t.has_token(t0, a).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(t.has_token(t0 + ms(99), a).is_err());
        assert!(t.has_token(t0 + ms(100), a).is_ok());
        // Over 10 s stepped every millisecond: 5 + 100 admitted at most.
        let mut admitted = 0;
        for step in 101..=10_000 {
            let now = t0 + ms(step);
            if t.has_token(now, a).is_ok() {
                t.admitted(now, a);
                t.released(a);
                admitted += 1;
            }
        }
        assert!((99..=100).contains(&admitted), "{admitted}");
    }

    /// Tenant "a" with a quota of 1/s, burst 10, all 10 tokens spent at `t0` (window 100 ms).
    fn emptied_bucket() -> (Instant, Tenants) {
        let t0 = Instant::now();
        let quota = Quota {
            rate: 1.0,
            burst: 10.0,
        };
        let mut t = Tenants::with_window(&config(10, Some(quota)), t0, ms(100));
        let a = t.enter(t0, Some("a"));
        for _ in 0..10 {
            t.admitted(t0, a);
            t.released(a);
        }
        (t0, t)
    }

    #[test]
    fn forgetting_a_tenant_never_hands_it_fresh_tokens() {
        let (t0, mut t) = emptied_bucket();
        // Idle for 2 s: no longer active, but kept while its bucket refills (2 of 10 tokens).
        t.sweep(t0 + ms(2000), usize::MAX);
        assert_eq!((t.active(), t.tracked()), (0, 1));
        let a = t.enter(t0 + ms(2000), Some("a"));
        for _ in 0..2 {
            assert!(t.has_token(t0 + ms(2000), a).is_ok());
            t.admitted(t0 + ms(2000), a);
            t.released(a);
        }
        assert!(t.has_token(t0 + ms(2000), a).is_err());
        // Full again after 10 s idle: forgotten, and coming back full is no gift.
        t.sweep(t0 + ms(12_100), usize::MAX);
        t.sweep(t0 + ms(12_300), usize::MAX);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn an_idle_tenant_whose_bucket_refills_is_looked_at_again_only_when_it_is_full() {
        let (t0, mut t) = emptied_bucket();
        t.sweep(t0 + ms(100), usize::MAX);
        // Parked until full (10 s), with nothing to look at before then.
        assert!(t.checks.is_empty());
        assert_eq!(t.refills.len(), 1);
        t.sweep(t0 + ms(9_000), usize::MAX);
        assert_eq!(t.tracked(), 1);
        t.sweep(t0 + ms(10_100), usize::MAX);
        assert_eq!(t.tracked(), 0);
        assert!(t.refills.is_empty());
    }

    #[test]
    fn a_tenant_coming_back_while_parked_keeps_its_bucket_and_its_old_entry_goes_stale() {
        let (t0, mut t) = emptied_bucket();
        t.sweep(t0 + ms(100), usize::MAX);
        // Back at 3 s with 3 tokens, not a fresh 10.
        let a = t.enter(t0 + ms(3_000), Some("a"));
        let mut took = 0;
        while t.has_token(t0 + ms(3_000), a).is_ok() {
            t.admitted(t0 + ms(3_000), a);
            t.released(a);
            took += 1;
        }
        assert_eq!(took, 3);
        // The parked entry (due at 10 s) is stale: at 10.1 s the tenant is parked again, not
        // forgotten, because its bucket is not full.
        t.sweep(t0 + ms(10_100), usize::MAX);
        assert_eq!(t.tracked(), 1);
        t.sweep(t0 + ms(13_200), usize::MAX);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn each_decision_sweeps_a_bounded_number_of_tenants() {
        let t0 = Instant::now();
        let mut t = Tenants::with_window(&config(100_000, None), t0, ms(100));
        for i in 0..10_000 {
            t.enter(t0, Some(&format!("t{i}")));
        }
        assert_eq!(t.tracked(), 10_000);
        // All idle now; one decision forgets only a few of them.
        t.enter(t0 + ms(200), Some("new"));
        assert_eq!(t.tracked(), 10_001 - SWEEP_PER_DECISION);
        t.sweep(t0 + ms(200), usize::MAX);
        assert_eq!(t.tracked(), 1);
    }

    /// One step of a stepped-time simulation, run as the admission actor runs the rule.
    #[derive(Debug, Clone)]
    enum Op {
        /// A request of tenant `n` (0 = no header) and class.
        Arrive(u8, Priority),
        /// The held slot at this index (modulo the count) is given back.
        Release(usize),
        /// Time passes.
        Wait(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            5 => (0u8..6, prop::sample::select(Priority::ALL.to_vec()))
                .prop_map(|(n, p)| Op::Arrive(n, p)),
            4 => any::<usize>().prop_map(Op::Release),
            1 => (1u64..400).prop_map(Op::Wait),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, failure_persistence: None, ..Default::default() })]

        /// Driving the limiter, the rule and a backlog as the actor does, whatever the arrivals,
        /// releases and pauses:
        /// - no request is shed while a slot of its class is free, and none while its tenant
        ///   holds less than its share (it waits instead);
        /// - a tenant over its share never waits;
        /// - no slot stands idle while a waiter fits it;
        /// - the tenants' counts add up to the limiter's.
        #[test]
        fn no_tenant_is_shed_under_its_share_or_while_slots_are_free(
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let limits = Limits { high: 8, normal: 6, low: 4 };
            let t0 = Instant::now();
            let mut now = t0;
            let mut machine = Admission::new(limits);
            let mut tenants = Tenants::with_window(&config(4, None), t0, ms(100));
            let mut backlog: Backlog<TenantId> = Backlog::new(16, ms(50));
            let mut held: Vec<(PermitToken, TenantId)> = Vec::new();
            for op in ops {
                match op {
                    Op::Arrive(n, p) => {
                        let key = (n > 0).then(|| format!("t{n}"));
                        let id = tenants.enter(now, key.as_deref());
                        let ceiling = limits.ceiling(p);
                        let (inflight, share, holds) =
                            (machine.inflight(), tenants.share(ceiling), tenants.holds(id));
                        match tenants.judge(id, inflight, ceiling) {
                            Verdict::Admit => {
                                proptest::prop_assert!(inflight < ceiling);
                                let token = machine.try_acquire(p).unwrap();
                                tenants.admitted(now, id);
                                held.push((token, id));
                            }
                            Verdict::OverShare => {
                                proptest::prop_assert!(inflight >= ceiling);
                                proptest::prop_assert!(f64::from(holds) >= share);
                            }
                            Verdict::Wait => {
                                proptest::prop_assert!(inflight >= ceiling);
                                proptest::prop_assert!(f64::from(holds) < share);
                                tenants.waits(id);
                                if let Some((_, gone)) = backlog.push(now, p, id) {
                                    tenants.stops_waiting(gone);
                                }
                            }
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let (token, id) = held.swap_remove(i % held.len());
                        machine.release(token);
                        tenants.released(id);
                    }
                    Op::Release(_) => {}
                    Op::Wait(n) => {
                        now += ms(n);
                        for (_, gone) in backlog.expire(now) {
                            tenants.stops_waiting(gone);
                        }
                    }
                }
                // Serve the backlog as the actor does after every change.
                loop {
                    let inflight = machine.inflight();
                    let Some((p, id)) = backlog.pop_best(|p, id| {
                        (inflight < limits.ceiling(p)).then(|| tenants.deficit(*id, limits.ceiling(p)))
                    }) else {
                        break;
                    };
                    tenants.stops_waiting(id);
                    let token = machine.try_acquire(p).unwrap();
                    tenants.admitted(now, id);
                    held.push((token, id));
                }
                let inflight = machine.inflight();
                proptest::prop_assert!(
                    backlog.pop_best(|p, _| (inflight < limits.ceiling(p)).then_some(0.0)).is_none(),
                    "a slot stands idle while a waiter fits it"
                );
                proptest::prop_assert_eq!(machine.inflight() as usize, held.len());
                let mut counted = std::collections::HashMap::new();
                for (_, id) in &held {
                    *counted.entry(id.0).or_insert(0u32) += 1;
                }
                for (slot, n) in counted {
                    proptest::prop_assert_eq!(tenants.holds(TenantId(slot)), n);
                }
            }
        }
    }
}
