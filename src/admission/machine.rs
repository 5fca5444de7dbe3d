//! The admission limiter. Pure: no actix. All classes share one in-flight count; a request of class
//! `p` is admitted while the count is below `p`'s ceiling.

use std::fmt;

use super::fair::TenantId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Case-sensitive: `high`, `normal`, `low` (anything else is a 400).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }

    /// Its place in [`Priority::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// In-flight ceilings per class; configuration guarantees `low < normal < high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub high: u32,
    pub normal: u32,
    pub low: u32,
}

impl Limits {
    pub fn ceiling(&self, priority: Priority) -> u32 {
        match priority {
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

/// Shares of the live limit for the lower classes (adaptive mode).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fractions {
    pub normal: f64,
    pub low: f64,
}

impl Limits {
    /// The ceilings for a live limit: high gets it all, normal and low their fractions, always
    /// with low < normal < high (for a limit of at least 3).
    pub fn from_limit(limit: u32, f: Fractions) -> Self {
        let high = limit.max(3);
        let normal = ((f64::from(high) * f.normal) as u32).clamp(2, high - 1);
        let low = ((f64::from(high) * f.low) as u32).clamp(1, normal - 1);
        Self { high, normal, low }
    }
}

/// Why a request was shed: the `reason` of the 429 body and of `admission_shed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Its class's in-flight ceiling was reached (or a full backlog made room for a newer waiter).
    Capacity,
    /// Its tenant held its fair share or more of a full class (tenant fairness).
    TenantShare,
    /// Its tenant's token bucket was empty (the per-tenant quota).
    TenantQuota,
    /// It waited for a slot (backlog or fair wait) as long as allowed and none came.
    QueueTimeout,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Capacity,
        Reason::TenantShare,
        Reason::TenantQuota,
        Reason::QueueTimeout,
    ];

    /// Its place in [`Reason::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Reason::Capacity => 0,
            Reason::TenantShare => 1,
            Reason::TenantQuota => 2,
            Reason::QueueTimeout => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Capacity => "capacity",
            Reason::TenantShare => "tenant_share",
            Reason::TenantQuota => "tenant_quota",
            Reason::QueueTimeout => "queue_timeout",
        }
    }
}

/// A request admission refused (answered 429): why, and how long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// Whole seconds, at least 1 (`Retry-After`).
    pub retry_after: u32,
}

impl Refusal {
    /// A refusal for `reason` with `Retry-After: 1`.
    pub const fn of(reason: Reason) -> Self {
        Self {
            reason,
            retry_after: 1,
        }
    }

    /// Over quota: retry once the next token is there (whole seconds, rounded up, at least 1).
    pub fn quota(wait: std::time::Duration) -> Self {
        let secs = wait
            .as_millis()
            .div_ceil(1000)
            .clamp(1, u128::from(u32::MAX));
        Self {
            reason: Reason::TenantQuota,
            retry_after: u32::try_from(secs).unwrap_or(u32::MAX),
        }
    }
}

/// A refused request: the in-flight ceiling of its class was reached (answered 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded: the in-flight ceiling of this priority is reached")]
pub struct Shed;

/// One admitted request's slot. Only [`Admission::try_acquire`] makes one and
/// [`Admission::release`] consumes it:
///
/// ```
/// use load_shed_api::{Admission, Limits, Priority};
/// let mut a = Admission::new(Limits { high: 3, normal: 2, low: 1 });
/// let token = a.try_acquire(Priority::Low).unwrap();
/// a.release(token);
/// assert_eq!(a.inflight(), 0);
/// ```
///
/// so a slot cannot be given back twice (the same lines, releasing twice, do not compile):
///
/// ```compile_fail
/// use load_shed_api::{Admission, Limits, Priority};
/// let mut a = Admission::new(Limits { high: 3, normal: 2, low: 1 });
/// let token = a.try_acquire(Priority::Low).unwrap();
/// a.release(token);
/// a.release(token); // error[E0382]: use of moved value
/// ```
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit token must be released"]
pub struct PermitToken {
    priority: Priority,
    /// Its tenant, with tenant fairness on.
    tenant: Option<TenantId>,
}

impl PermitToken {
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Its tenant (tenant fairness), whose count the release lowers.
    pub(crate) fn tenant(&self) -> Option<TenantId> {
        self.tenant
    }

    /// Charges the slot to `tenant`.
    pub(crate) fn for_tenant(self, tenant: TenantId) -> Self {
        Self {
            tenant: Some(tenant),
            ..self
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admission {
    limits: Limits,
    inflight: u32,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            inflight: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// New ceilings (adaptive mode). Requests in flight keep their slots; if the count is now
    /// above a ceiling, that class is shed until enough of them finish.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    pub fn try_acquire(&mut self, priority: Priority) -> Result<PermitToken, Shed> {
        if self.inflight < self.limits.ceiling(priority) {
            self.inflight += 1;
            Ok(PermitToken {
                priority,
                tenant: None,
            })
        } else {
            Err(Shed)
        }
    }

    pub fn release(&mut self, token: PermitToken) {
        let PermitToken { .. } = token;
        // Every token was counted in when made, so this cannot go below zero.
        self.inflight = self.inflight.saturating_sub(1);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        high: 5,
        normal: 4,
        low: 2,
    };

    #[test]
    fn each_class_is_admitted_up_to_its_own_ceiling_of_the_shared_pool() {
        let mut a = Admission::new(LIMITS);
        let mut held = Vec::new();
        // Low fills the pool up to 2, then is shed.
        held.push(a.try_acquire(Priority::Low).unwrap());
        held.push(a.try_acquire(Priority::Low).unwrap());
        assert_eq!(a.try_acquire(Priority::Low), Err(Shed));
        // Normal may go on to 4.
        held.push(a.try_acquire(Priority::Normal).unwrap());
        held.push(a.try_acquire(Priority::Normal).unwrap());
        assert_eq!(a.try_acquire(Priority::Normal), Err(Shed));
        assert_eq!(a.try_acquire(Priority::Low), Err(Shed));
        // High keeps the last slot.
        held.push(a.try_acquire(Priority::High).unwrap());
        assert_eq!(a.try_acquire(Priority::High), Err(Shed));
        assert_eq!(a.inflight(), 5);
        for t in held {
            a.release(t);
        }
        assert_eq!(a.inflight(), 0);
    }

    #[test]
    fn a_release_makes_room_for_the_next_request_of_that_class() {
        let mut a = Admission::new(LIMITS);
        let t1 = a.try_acquire(Priority::Low).unwrap();
        let _t2 = a.try_acquire(Priority::Low).unwrap();
        assert!(a.try_acquire(Priority::Low).is_err());
        a.release(t1);
        assert!(a.try_acquire(Priority::Low).is_ok());
    }

    #[test]
    fn high_priority_is_admitted_while_lower_classes_are_shed() {
        let mut a = Admission::new(LIMITS);
        let _held: Vec<_> = (0..4)
            .map(|_| a.try_acquire(Priority::High).unwrap())
            .collect();
        assert!(a.try_acquire(Priority::Low).is_err());
        assert!(a.try_acquire(Priority::Normal).is_err());
        assert_eq!(
            a.try_acquire(Priority::High).unwrap().priority(),
            Priority::High
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(Priority),
        /// Releases the held token at this index (modulo the count), if any.
        Release(usize),
        /// A new live limit (adaptive mode), split into classes.
        SetLimit(u32),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => prop::sample::select(Priority::ALL.to_vec()).prop_map(Op::Acquire),
            3 => any::<usize>().prop_map(Op::Release),
            1 => (3u32..60).prop_map(Op::SetLimit),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..Default::default() })]

        /// Whatever the order of acquires, releases and limit changes: no admission takes the
        /// count above the live ceiling of its class, and the count is exactly the tokens held
        /// (so it never goes below zero and no slot leaks).
        #[test]
        fn inflight_never_exceeds_the_live_ceiling_nor_drops_below_zero(
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let fractions = Fractions { normal: 0.9, low: 0.7 };
            let mut a = Admission::new(Limits::from_limit(20, fractions));
            let mut held: Vec<PermitToken> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire(p) => {
                        let before = a.inflight();
                        match a.try_acquire(p) {
                            Ok(t) => {
                                proptest::prop_assert!(a.inflight() <= a.limits().ceiling(p));
                                proptest::prop_assert_eq!(a.inflight(), before + 1);
                                held.push(t);
                            }
                            Err(Shed) => {
                                proptest::prop_assert!(before >= a.limits().ceiling(p));
                                proptest::prop_assert_eq!(a.inflight(), before);
                            }
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let t = held.swap_remove(i % held.len());
                        a.release(t);
                    }
                    Op::Release(_) => {}
                    Op::SetLimit(l) => a.set_limits(Limits::from_limit(l, fractions)),
                }
                proptest::prop_assert_eq!(a.inflight() as usize, held.len());
            }
            for t in held.drain(..) {
                a.release(t);
            }
            proptest::prop_assert_eq!(a.inflight(), 0);
        }
    }

    #[test]
    fn priorities_parse_case_sensitively() {
        assert_eq!(Priority::parse("high"), Some(Priority::High));
        assert_eq!(Priority::parse("normal"), Some(Priority::Normal));
        assert_eq!(Priority::parse("low"), Some(Priority::Low));
        for bad in ["HIGH", "Low", "", " low", "urgent"] {
            assert_eq!(Priority::parse(bad), None, "{bad:?}");
        }
    }
}
