//! Query memory: one pool for the whole process, and a limit per query.
//!
//! weir runs ingest and queries in one process, so a query must never take
//! the memory ingest needs. Every query gets a [`QueryPool`] of its own,
//! which DataFusion's operators reserve memory from before they grow
//! (hash tables, sorts, aggregate state, buffered batches). A reservation
//! is refused when it would take the query past its own limit
//! (`limits.query_memory_per_query_bytes`) or all queries together past the
//! process's pool (`limits.query_memory_bytes`). Within a query, memory is
//! shared as DataFusion's `FairSpillPool` shares it: each spilling
//! operator gets an even part, so that one partition cannot starve another
//! of the memory it needs to merge its spill files. Operators that can spill
//! (sorts, grouped aggregates, joins) then spill to files under the data
//! directory; the others fail the query with a "resources exhausted" error
//! naming the limit, which the server reports as `RESOURCE_EXHAUSTED`.
//! Other queries and ingest go on.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result as DFResult};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// The memory all queries of a process share.
#[derive(Debug)]
pub struct SharedPool {
    limit: usize,
    used: AtomicUsize,
}

impl SharedPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes reserved by all queries now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The pool's size.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// One query's memory: its own limit, within the [`SharedPool`].
#[derive(Debug)]
pub struct QueryPool {
    shared: Arc<SharedPool>,
    limit: usize,
    /// The query's own accounting and its fair shares.
    query: FairSpillPool,
}

impl QueryPool {
    /// A pool for one query of at most `limit` bytes, drawn from `shared`.
    pub fn new(shared: Arc<SharedPool>, limit: usize) -> Self {
        Self {
            shared,
            limit,
            query: FairSpillPool::new(limit),
        }
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool: {} of {} bytes (shared pool: {} of {} bytes)",
            self.query.reserved(),
            self.limit,
            self.shared.used(),
            self.shared.limit
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "weir-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.query.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.query.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.query.grow(reservation, additional);
        self.shared.used.fetch_add(additional, Ordering::AcqRel);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.query.shrink(reservation, shrink);
        self.shared.used.fetch_sub(shrink, Ordering::AcqRel);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DFResult<()> {
        self.query.try_grow(reservation, additional).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "the query memory limit of {} bytes per query \
                     (limits.query_memory_per_query_bytes) is reached: {} needs {additional} \
                     more bytes and the query holds {}; narrow the query (filters, LIMIT, \
                     fewer groups) or raise the limit ({})",
                self.limit,
                reservation.consumer().name(),
                self.query.reserved(),
                e.find_root().message()
            ))
        })?;
        let shared = self
            .shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let new = used.checked_add(additional)?;
                (new <= self.shared.limit).then_some(new)
            });
        if let Err(used) = shared {
            self.query.shrink(reservation, additional);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the server's query memory pool of {} bytes (limits.query_memory_bytes) is \
                 full: all running queries hold {used} bytes and {} needs {additional} more; \
                 retry when other queries are done, or raise the limit",
                self.shared.limit,
                reservation.consumer().name()
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.query.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit.min(self.shared.limit))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::MemoryConsumer;

    use super::*;

    #[test]
    fn a_query_is_held_to_its_limit_and_all_queries_to_the_pool() {
        let shared = Arc::new(SharedPool::new(1000));
        let first: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 600));
        let second: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 600));
        let a = MemoryConsumer::new("sort").register(&first);
        let b = MemoryConsumer::new("hash").register(&second);
        a.try_grow(500).unwrap();
        let err = a.try_grow(200).unwrap_err().to_string();
        assert!(err.contains("limits.query_memory_per_query_bytes"), "{err}");
        b.try_grow(400).unwrap();
        let err = b.try_grow(200).unwrap_err().to_string();
        assert!(err.contains("limits.query_memory_bytes"), "{err}");
        assert_eq!(shared.used(), 900, "a refused reservation takes nothing");
        assert_eq!(second.reserved(), 400);
        drop(a);
        assert_eq!(shared.used(), 400, "a finished query gives its memory back");
        b.try_grow(200).unwrap();
    }
}
