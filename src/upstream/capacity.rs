//! How many requests the simulated dependency serves at once (`upstream.concurrency`), and the
//! scheduled capacity loss (`upstream.degrade_after_seconds`). Requests beyond the limit wait, so
//! latency grows with load as it does in a real, saturated dependency; with
//! `upstream.max_waiting`, only that many wait and the rest are refused at once, as an overloaded
//! backend that sheds does.
//!
//! Waiters are served by priority (the caller's `X-Priority`, which the api sends on its calls):
//! a freed slot goes to the oldest high-priority waiter, then normal, then low. Within a class
//! the order is first come, first served. So criticality holds across two hops: when the
//! dependency is saturated, the api's high-priority calls overtake its low-priority ones.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::admission::Priority;

/// A drop in capacity on a schedule: `after` start-up, only `to` requests run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degrade {
    pub after: Duration,
    pub to: usize,
}

/// The slots of a dependency with limited concurrency; `None` inside means unlimited.
#[derive(Debug, Clone)]
pub(crate) struct Capacity {
    slots: Option<Arc<Gate>>,
    /// When, and how many slots to take away then.
    degrade: Option<(Duration, usize)>,
    /// `upstream.max_waiting`, and how many wait now.
    max_waiting: Option<(usize, Arc<AtomicUsize>)>,
}

/// A request refused because `upstream.max_waiting` requests already wait for a slot.
#[derive(Debug)]
pub(crate) struct Full;

/// Slots handed out by priority.
#[derive(Debug)]
struct Gate {
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    /// Slots still to be taken away (a capacity loss larger than the free slots): freed slots
    /// pay this first.
    debt: usize,
    /// Waiters per class, in the order of [`Priority::ALL`] (high first), oldest in front. A
    /// waiter that gave up leaves a closed sender, skipped when it comes up.
    waiting: [VecDeque<oneshot::Sender<Slot>>; 3],
}

impl GateState {
    /// Takes a free slot if there is one and nobody waits (waiters go first).
    fn take_free(&mut self) -> bool {
        let free = self.free > 0 && self.waiting.iter().all(VecDeque::is_empty);
        if free {
            self.free -= 1;
        }
        free
    }
}

/// One slot of the dependency, given back (to the next waiter, by priority) when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    /// `None` once disarmed (a slot made for a waiter that had gone, already accounted for).
    gate: Option<Arc<Gate>>,
}

impl Slot {
    fn new(gate: &Arc<Gate>) -> Self {
        Self {
            gate: Some(gate.clone()),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

impl Gate {
    fn new(slots: usize) -> Self {
        Self {
            state: Mutex::new(GateState {
                free: slots,
                debt: 0,
                waiting: Default::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot at once, if one is free and nobody waits.
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.lock().take_free().then(|| Slot::new(self))
    }

    /// A slot: at once if one is free and nobody waits, else after the waiters before it.
    async fn take(self: &Arc<Self>, priority: Priority) -> Option<Slot> {
        let rx = {
            let mut s = self.lock();
            if s.take_free() {
                return Some(Slot::new(self));
            }
            let (tx, rx) = oneshot::channel();
            let queue = &mut s.waiting[priority.index()];
            // Waiters that gave up at the front go now rather than at the next release.
            while queue.front().is_some_and(oneshot::Sender::is_closed) {
                queue.pop_front();
            }
            queue.push_back(tx);
            rx
        };
        rx.await.ok()
    }

    /// A slot is given back: it pays a capacity loss still owed, or goes to the first waiter of
    /// the highest class still waiting, or becomes free.
    fn release(self: &Arc<Self>) {
        let mut slot: Option<Slot> = None;
        loop {
            let next = {
                let mut s = self.lock();
                if s.debt > 0 {
                    s.debt -= 1;
                    None
                } else if let Some(tx) = s.waiting.iter_mut().find_map(VecDeque::pop_front) {
                    Some(tx)
                } else {
                    s.free += 1;
                    None
                }
            };
            let Some(tx) = next else {
                // Handed on, paid or freed: a slot made for a waiter that was gone is not
                // released again.
                if let Some(mut unused) = slot.take() {
                    unused.gate = None;
                }
                return;
            };
            let given = slot.take().unwrap_or_else(|| Slot::new(self));
            match tx.send(given) {
                Ok(()) => return,
                // That waiter gave up: try the next with the same slot.
                Err(back) => slot = Some(back),
            }
        }
    }

    /// Takes `lost` slots away for good: free ones now, the rest as they are given back.
    fn shrink(&self, lost: usize) {
        let mut s = self.lock();
        let now = lost.min(s.free);
        s.free -= now;
        s.debt += lost - now;
    }
}

impl Capacity {
    /// `concurrency` slots (0 = unlimited), losing some after `degrade.after`.
    /// At most `max_waiting` wait for a slot (`None`: any number).
    pub(crate) fn new(
        concurrency: usize,
        degrade: Option<Degrade>,
        max_waiting: Option<usize>,
    ) -> Self {
        Self {
            slots: (concurrency > 0).then(|| Arc::new(Gate::new(concurrency))),
            degrade: degrade.map(|d| (d.after, concurrency.saturating_sub(d.to))),
            max_waiting: max_waiting.map(|max| (max, Arc::default())),
        }
    }

    /// Whether requests may have to wait for a slot.
    pub(crate) fn is_limited(&self) -> bool {
        self.slots.is_some()
    }

    /// Waits for a slot (higher `priority` first, FIFO within one), held until the answer
    /// (`None` when unlimited); refused at once when no slot is free and `max_waiting` requests
    /// already wait.
    pub(crate) async fn slot(&self, priority: Priority) -> Result<Option<Slot>, Full> {
        let Some(slots) = self.slots.clone() else {
            return Ok(None);
        };
        let Some((max, waiting)) = &self.max_waiting else {
            return Ok(slots.take(priority).await);
        };
        if let Some(slot) = slots.try_take() {
            return Ok(Some(slot));
        }
        if waiting.fetch_add(1, Ordering::AcqRel) >= *max {
            waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Full);
        }
        // Counted out however the wait ends, the caller's deadline or disconnect included.
        let _waiting = Waiting(waiting);
        Ok(slots.take(priority).await)
    }

    /// Schedules the configured capacity loss, if any, on the current runtime: after the delay,
    /// slots are taken away for good. Calls already running finish; from then on only the
    /// degraded number run at once.
    pub(crate) fn schedule_degrade(&self) {
        let (Some(slots), Some((after, lost))) = (self.slots.clone(), self.degrade) else {
            return;
        };
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(after).await;
            log::warn!(
                "upstream: capacity drops by {lost} slots now (upstream.degrade_after_seconds)"
            );
            slots.shrink(lost);
        });
    }
}

/// One request counted among the waiting until it is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn free(c: &Capacity) -> usize {
        c.slots.as_ref().unwrap().lock().free
    }

    #[actix_web::test]
    async fn a_freed_slot_goes_to_the_highest_priority_waiter_then_first_come() {
        let c = Capacity::new(1, None, None);
        let held = c.slot(Priority::Normal).await.unwrap().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (n, p) in [
            (1, Priority::Low),
            (2, Priority::Normal),
            (3, Priority::High),
            (4, Priority::Low),
            (5, Priority::High),
        ] {
            let (c, order) = (c.clone(), order.clone());
            waiters.push(actix_web::rt::spawn(async move {
                let slot = c.slot(p).await.unwrap().unwrap();
                order.lock().unwrap().push(n);
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
            // Each queued before the next arrives.
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![3, 5, 2, 1, 4]);
        assert_eq!(free(&c), 1);
    }

    #[actix_web::test]
    async fn a_waiter_that_gives_up_does_not_keep_the_slot() {
        let c = Capacity::new(1, None, Some(4));
        let held = c.slot(Priority::Normal).await.unwrap().unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), c.slot(Priority::High)).await;
        assert!(gave_up.is_err());
        drop(held);
        // The slot went past the one who left, and is free again.
        assert_eq!(free(&c), 1);
        assert!(c.slot(Priority::Low).await.unwrap().is_some());
    }

    #[actix_web::test]
    async fn beyond_max_waiting_a_request_is_refused_at_once() {
        let c = Capacity::new(1, None, Some(1));
        let held = c.slot(Priority::Normal).await.unwrap().unwrap();
        let c2 = c.clone();
        let waiter = actix_web::rt::spawn(async move { c2.slot(Priority::Normal).await.is_ok() });
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        assert!(matches!(c.slot(Priority::High).await, Err(Full)));
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn a_capacity_loss_takes_free_slots_now_and_busy_ones_as_they_come_back() {
        let gate = Arc::new(Gate::new(4));
        let a = gate.try_take().unwrap();
        let b = gate.try_take().unwrap();
        gate.shrink(3);
        assert_eq!(gate.lock().free, 0);
        drop(a); // pays the debt
        assert_eq!(gate.lock().free, 0);
        drop(b);
        assert_eq!(gate.lock().free, 1);
    }
}
