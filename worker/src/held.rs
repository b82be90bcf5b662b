//! Jobs held back by their org's cap on running jobs.
//!
//! A job whose org already runs as many jobs as its plan allows is not handed back to
//! JetStream: a redelivered message is served before new ones, so cycling a flood's messages
//! through the server would keep every other org's new jobs behind it. Instead the worker keeps
//! the message (reporting it in progress, so it is not redelivered) in a queue per org and moves
//! on, without using a slot. Whenever a slot frees, the consumer first offers it to the held
//! jobs, org by org in turn, and starts the first whose org has room again; only then does it
//! pull new messages.
//!
//! The queue is bounded ([`HELD_PER_SLOT`] per slot); beyond it a capped job is handed back
//! with a delay. On shutdown every held job is handed back at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_nats::jetstream::{AckKind, Message};
use protocol::{JobSpec, OrgId};

use crate::leases::{Lease, Leases};

/// Held jobs a worker keeps per slot before it hands capped jobs back instead.
pub const HELD_PER_SLOT: usize = 256;

/// A job waiting for its org's cap.
#[derive(Debug)]
pub struct HeldJob {
    pub msg: Message,
    pub spec: JobSpec,
    pub cap: u32,
}

#[derive(Debug, Default)]
struct Inner {
    /// Orgs with held jobs, in the order they are offered a slot.
    turn: VecDeque<OrgId>,
    by_org: HashMap<OrgId, VecDeque<HeldJob>>,
    total: usize,
}

/// The held jobs of one worker.
#[derive(Debug)]
pub struct Held {
    inner: Mutex<Inner>,
    limit: usize,
}

impl Held {
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many jobs are held.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds `job`; gives it back when the queue is full.
    pub fn push(&self, job: Box<HeldJob>) -> Result<(), Box<HeldJob>> {
        let mut inner = self.lock();
        if inner.total >= self.limit {
            return Err(job);
        }
        let org = job.spec.org_id;
        let queue = inner.by_org.entry(org).or_default();
        let first = queue.is_empty();
        queue.push_back(*job);
        if first {
            inner.turn.push_back(org);
        }
        inner.total += 1;
        Ok(())
    }

    /// The first held job, taking orgs in turn, whose org has room again (its lease is then
    /// taken). `None` when every org with held jobs is still at its cap.
    pub async fn next_runnable(&self, leases: &Leases) -> Option<HeldJob> {
        let candidates: Vec<(OrgId, protocol::JobId, u32)> = {
            let inner = self.lock();
            inner
                .turn
                .iter()
                .filter_map(|org| {
                    let front = inner.by_org.get(org)?.front()?;
                    Some((*org, front.spec.job_id.clone(), front.cap))
                })
                .collect()
        };
        for (org, job, cap) in candidates {
            if leases.acquire(org, &job, cap).await == Lease::Full {
                continue;
            }
            let mut inner = self.lock();
            let Some(queue) = inner.by_org.get_mut(&org) else {
                continue;
            };
            if queue.front().map(|h| &h.spec.job_id) != Some(&job) {
                continue;
            }
            let taken = queue.pop_front();
            let now_empty = queue.is_empty();
            if now_empty {
                inner.by_org.remove(&org);
            }
            // This org goes to the back of the turn.
            inner.turn.retain(|o| *o != org);
            if !now_empty {
                inner.turn.push_back(org);
            }
            inner.total -= 1;
            return taken;
        }
        None
    }

    /// Tells JetStream every held job is still in progress, so none is redelivered.
    pub async fn keep_alive(&self) {
        let msgs: Vec<Message> = {
            let inner = self.lock();
            inner
                .by_org
                .values()
                .flatten()
                .map(|h| h.msg.clone())
                .collect()
        };
        for m in msgs {
            if let Err(e) = m.ack_with(AckKind::Progress).await {
                tracing::warn!(error = %e, "cannot report a held job in progress");
            }
        }
    }

    /// Removes and returns every held job (shutdown).
    pub fn take_all(&self) -> Vec<HeldJob> {
        let mut inner = self.lock();
        inner.turn.clear();
        inner.total = 0;
        inner
            .by_org
            .drain()
            .flat_map(|(_, q)| q.into_iter())
            .collect()
    }
}
