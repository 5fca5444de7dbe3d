//! An admitted request's slot ([`Permit`]), and what every permit shares ([`Slots`]): the way
//! back to the actor, the in-flight count and the ceilings handlers read to shed at once.
//!
//! The count goes up when the actor admits and down the moment a permit is dropped, before its
//! `Release` message is even sent, so a client whose previous request just ended is never shed by
//! its own stale slot. The actor's exact count catches up in order: the mailbox is one FIFO queue,
//! and a `Release` sent before a response is queued before any `Acquire` that response causes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use actix::Addr;

use super::metrics::Shadow;
use crate::shadow::Switch;

use super::actor::{AdmissionActor, Release};
use super::machine::{Limits, PermitToken, Priority};

/// One per actor, shared by the handle and every permit: a permit costs one reference count, not
/// an address of its own (an actix address clone allocates twice and counts its senders).
pub(crate) struct Slots {
    addr: Addr<AdmissionActor>,
    /// Admitted permits not yet dropped, decremented at once on drop.
    inflight: AtomicU32,
    /// The ceilings in force (high, normal, low), as the actor last published them.
    ceilings: [AtomicU32; 3],
    /// Shadow mode, whose `admission_shadow_inflight` shadow permits count themselves in.
    shadow: Arc<Switch<Shadow>>,
}

impl Slots {
    /// `shadow`: shadow mode, whose gauge shadow permits count themselves in.
    pub(crate) fn new(
        addr: Addr<AdmissionActor>,
        limits: Limits,
        shadow: Arc<Switch<Shadow>>,
    ) -> Self {
        Self {
            addr,
            inflight: AtomicU32::new(0),
            ceilings: Priority::ALL.map(|p| AtomicU32::new(limits.ceiling(p))),
            shadow,
        }
    }

    pub(crate) fn addr(&self) -> &Addr<AdmissionActor> {
        &self.addr
    }

    /// The actor's part: new ceilings.
    pub(crate) fn publish(&self, limits: Limits) {
        for p in Priority::ALL {
            self.ceilings[p.index()].store(limits.ceiling(p), Ordering::Release);
        }
    }

    /// The ceilings published (high, normal, low) and the in-flight count, as handlers see them.
    pub(crate) fn published(&self) -> ([u32; 3], u32) {
        (
            Priority::ALL.map(|p| self.ceilings[p.index()].load(Ordering::Acquire)),
            self.inflight.load(Ordering::Acquire),
        )
    }

    /// Requests running only because of shadow mode (0 when enforcing).
    pub(crate) fn shadow_running(&self) -> i64 {
        self.shadow.series().map_or(0, |s| s.inflight.get())
    }

    /// Whether a request of `priority` fits under its ceiling by the published count.
    pub(crate) fn has_room(&self, priority: Priority) -> bool {
        self.inflight.load(Ordering::Acquire)
            < self.ceilings[priority.index()].load(Ordering::Acquire)
    }

    /// The actor's part: a permit for `token`, with the way back to the actor. If its asker is
    /// gone, dropping it releases the slot.
    pub(crate) fn permit(self: &Arc<Self>, token: PermitToken) -> Permit {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Permit {
            token: Some(token),
            slots: self.clone(),
        }
    }

    /// Shadow mode: a permit for a request admission would have shed. It holds no slot, so the
    /// in-flight count (and every later decision) stays what enforcing would have; it counts
    /// itself in `admission_shadow_inflight` while held.
    pub(crate) fn shadow_permit(self: &Arc<Self>) -> Permit {
        if let Some(shadow) = self.shadow.series() {
            shadow.inflight.inc();
        }
        Permit {
            token: None,
            slots: self.clone(),
        }
    }
}

/// An admitted request's slot, given back when dropped: on success, error, timeout, or when the
/// client goes away and actix drops the handler. A shadow permit (no token) holds no slot.
pub(crate) struct Permit {
    token: Option<PermitToken>,
    slots: Arc<Slots>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.slots.inflight.fetch_sub(1, Ordering::AcqRel);
            self.slots.addr.do_send(Release { token });
        } else if let Some(shadow) = self.slots.shadow.series() {
            shadow.inflight.dec();
        }
    }
}
