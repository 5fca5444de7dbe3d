//! Where the api's actors run: on the thread of one api worker, not on a thread of their own.
//!
//! Every message a handler sends to an actor on another thread wakes that thread when it sleeps.
//! On the main thread, where `Actor::start` would put them, the actors slept between almost every
//! two messages. Living on a worker, they share a thread that is awake while requests come in:
//! that worker's handlers reach them without crossing threads, and the other workers' messages
//! usually find the thread awake already (the counts: docs/performance.md, "Where a hop goes").
//!
//! The addresses exist from the start (routes hold them in `web::Data`); the actors start when the
//! first api worker builds its routes ([`ActorHome::settle`]), and messages sent before then wait
//! in their mailboxes. They stop with that worker, when the api server stops: see
//! `docs/design.md` ("Where the actors run") for what that means during a drain.

use std::sync::{Arc, Mutex, PoisonError};

use actix::dev::channel;
use actix::prelude::*;

type Starter = Box<dyn FnOnce() + Send>;

/// Actors whose address is known and whose start waits for a worker thread. Cloning shares it.
#[derive(Clone, Default)]
pub(crate) struct ActorHome {
    pending: Arc<Mutex<Vec<Starter>>>,
}

impl ActorHome {
    /// The address of `actor`, which starts at the next [`ActorHome::settle`]. Its `started`
    /// runs then, on that thread (set the mailbox capacity there, as usual).
    pub(crate) fn start<A>(&self, actor: A) -> Addr<A>
    where
        A: Actor<Context = Context<A>> + Send,
    {
        self.start_with(|addr| (actor, addr))
    }

    /// [`ActorHome::start`] for an actor built with its own address: `make` gets the address and
    /// returns the actor and what the caller keeps. (An actor holding its own address does not
    /// stop when every other address is dropped; here they all stop with their worker anyway.)
    pub(crate) fn start_with<A, T>(&self, make: impl FnOnce(Addr<A>) -> (A, T)) -> T
    where
        A: Actor<Context = Context<A>> + Send,
    {
        let (tx, rx) = channel::channel(16);
        let (actor, kept) = make(Addr::new(tx));
        self.lock().push(Box::new(move || {
            Context::with_receiver(rx).run(actor);
        }));
        kept
    }

    /// Starts the actors not started yet on the current thread's arbiter. The first api worker
    /// calls it while building its routes; for the others there is nothing left to start.
    pub(crate) fn settle(&self) {
        let starters = std::mem::take(&mut *self.lock());
        for start in starters {
            start();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Starter>> {
        // A starter never panics while the lock is held: the list is always whole.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Echo;

    impl Actor for Echo {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "std::thread::ThreadId")]
    struct WhereAreYou;

    impl Handler<WhereAreYou> for Echo {
        type Result = MessageResult<WhereAreYou>;

        fn handle(&mut self, _: WhereAreYou, _: &mut Context<Self>) -> Self::Result {
            MessageResult(std::thread::current().id())
        }
    }

    #[test]
    fn an_actor_answers_after_settle_on_the_thread_that_settled() {
        actix_web::rt::System::new().block_on(async {
            let home = ActorHome::default();
            let addr = home.start(Echo);
            // Sent before the actor runs: it waits in the mailbox.
            let asked = addr.send(WhereAreYou);
            let settler = actix::Arbiter::new();
            let settled = home.clone();
            settler.spawn_fn(move || settled.settle());
            let answered = actix_web::rt::time::timeout(std::time::Duration::from_secs(5), asked);
            let there = answered.await.expect("settle started the actor").unwrap();
            assert_ne!(there, std::thread::current().id());
            // Settled once: a second settle starts nothing, and the actor stays where it is.
            home.settle();
            let again = addr.send(WhereAreYou).await.unwrap();
            assert_ne!(again, std::thread::current().id());
            settler.stop();
        });
    }
}
