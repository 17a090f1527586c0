//! The byte budget shared by all tables' tails.
//!
//! Each table's tail has a budget of its own ([`TableConfig`]); this one
//! bounds all of them together, so that many tables cannot add up to more
//! memory than the node has. A request is admitted only while the total is
//! below the limit, with one atomic check-and-add, so the total overshoots
//! the limit by at most one request however many streams race for it.
//!
//! [`TableConfig`]: crate::TableConfig

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes held by all tails, against a limit.
#[derive(Debug)]
pub struct TailBudget {
    limit: usize,
    used: AtomicUsize,
    /// Signalled whenever a tail shrinks.
    pub(crate) room: Notify,
    /// Signalled when a request found the budget full: every committer
    /// with a non-empty tail commits.
    pub(crate) full: Notify,
}

impl TailBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            room: Notify::new(),
            full: Notify::new(),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Whether another request would be admitted now.
    pub fn has_room(&self) -> bool {
        self.used() < self.limit
    }

    /// Adds `bytes` if the total is below the limit; false (and nothing
    /// added) if it is not.
    pub(crate) fn try_admit(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.limit).then_some(used.saturating_add(bytes))
            })
            .is_ok()
    }

    /// Adds `bytes` whatever the total (replayed records, which were
    /// admitted before the restart).
    pub(crate) fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives `bytes` back and wakes the streams waiting for room.
    pub(crate) fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn racing_admissions_overshoot_by_at_most_one_request() {
        let budget = Arc::new(TailBudget::new(1000));
        let admitted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let budget = Arc::clone(&budget);
                    scope.spawn(move || (0..1000).filter(|_| budget.try_admit(7)).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(budget.used(), admitted * 7);
        assert!(
            budget.used() >= 1000 && budget.used() < 1000 + 7,
            "{}",
            budget.used()
        );
        assert!(!budget.try_admit(1));
        budget.release(budget.used());
        assert!(
            budget.try_admit(5000),
            "one request may exceed the limit alone"
        );
        assert!(!budget.has_room());
    }
}
