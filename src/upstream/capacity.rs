//! How many requests the simulated dependency serves at once (`upstream.concurrency`), and the
//! scheduled capacity loss (`upstream.degrade_after_seconds`). Requests beyond the limit wait in
//! FIFO order, so latency grows with load as it does in a real, saturated dependency; with
//! `upstream.max_waiting`, only that many wait and the rest are refused at once, as an overloaded
//! backend that sheds does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A drop in capacity on a schedule: `after` start-up, only `to` requests run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degrade {
    pub after: Duration,
    pub to: usize,
}

/// The slots of a dependency with limited concurrency; `None` inside means unlimited.
#[derive(Debug, Clone)]
pub(crate) struct Capacity {
    /// Fair (FIFO) slots; the semaphore is never closed.
    slots: Option<Arc<Semaphore>>,
    /// When, and how many slots to take away then.
    degrade: Option<(Duration, usize)>,
    /// `upstream.max_waiting`, and how many wait now.
    max_waiting: Option<(usize, Arc<AtomicUsize>)>,
}

/// A request refused because `upstream.max_waiting` requests already wait for a slot.
#[derive(Debug)]
pub(crate) struct Full;

impl Capacity {
    /// `concurrency` slots (0 = unlimited), losing some after `degrade.after`.
    /// At most `max_waiting` wait for a slot (`None`: any number).
    pub(crate) fn new(
        concurrency: usize,
        degrade: Option<Degrade>,
        max_waiting: Option<usize>,
    ) -> Self {
        Self {
            slots: (concurrency > 0).then(|| Arc::new(Semaphore::new(concurrency))),
            degrade: degrade.map(|d| (d.after, concurrency.saturating_sub(d.to))),
            max_waiting: max_waiting.map(|max| (max, Arc::default())),
        }
    }

    /// Whether requests may have to wait for a slot.
    pub(crate) fn is_limited(&self) -> bool {
        self.slots.is_some()
    }

    /// Waits in FIFO order for a slot, held until the answer (`None` when unlimited); refused
    /// at once when no slot is free and `max_waiting` requests already wait.
    pub(crate) async fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, Full> {
        let Some(slots) = self.slots.clone() else {
            return Ok(None);
        };
        let Some((max, waiting)) = &self.max_waiting else {
            return Ok(slots.acquire_owned().await.ok());
        };
        // A free slot is taken at once (never ahead of a waiter: the semaphore hands released
        // slots to waiters first).
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Ok(Some(slot));
        }
        if waiting.fetch_add(1, Ordering::AcqRel) >= *max {
            waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Full);
        }
        // Counted out however the wait ends, the caller's deadline or disconnect included.
        let _waiting = Waiting(waiting);
        Ok(slots.acquire_owned().await.ok())
    }

    /// Schedules the configured capacity loss, if any, on the current runtime: after the delay,
    /// a task takes slots away for good. It waits in the same FIFO queue as requests, so calls
    /// already running finish, and from then on only the degraded number run at once.
    pub(crate) fn schedule_degrade(&self) {
        let (Some(slots), Some((after, lost))) = (self.slots.clone(), self.degrade) else {
            return;
        };
        let Ok(lost) = u32::try_from(lost) else {
            return;
        };
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(after).await;
            log::warn!(
                "upstream: capacity drops by {lost} slots now (upstream.degrade_after_seconds)"
            );
            if let Ok(taken) = slots.acquire_many_owned(lost).await {
                taken.forget();
            }
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
