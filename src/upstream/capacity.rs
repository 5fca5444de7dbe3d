//! How many requests the simulated dependency serves at once (`upstream.concurrency`), and the
//! scheduled capacity loss (`upstream.degrade_after_seconds`). Requests beyond the limit wait in
//! FIFO order, so latency grows with load as it does in a real, saturated dependency.

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
}

impl Capacity {
    /// `concurrency` slots (0 = unlimited), losing some after `degrade.after`.
    pub(crate) fn new(concurrency: usize, degrade: Option<Degrade>) -> Self {
        Self {
            slots: (concurrency > 0).then(|| Arc::new(Semaphore::new(concurrency))),
            degrade: degrade.map(|d| (d.after, concurrency.saturating_sub(d.to))),
        }
    }

    /// Whether requests may have to wait for a slot.
    pub(crate) fn is_limited(&self) -> bool {
        self.slots.is_some()
    }

    /// Waits in FIFO order for a slot, held until the answer (`None` when unlimited).
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone()?.acquire_owned().await.ok()
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
