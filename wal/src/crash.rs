//! Named crash points, for crash tests of the whole server.
//!
//! A test starts `weir serve` with `WEIR_CRASH_AT=<point>` (or
//! `<point>:<n>`, to crash the `n`-th time the point is reached) and the
//! process aborts there, as abruptly as a SIGKILL: no destructor runs,
//! nothing is flushed or synced. Without the variable a point costs one
//! relaxed atomic load. The points:
//!
//! - `wal-mid-group`: the WAL writer has written half of a group and not
//!   synced it;
//! - `after-commit`: a Delta commit has landed, the WAL is not yet truncated.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The armed point and how many more times it is passed before the crash.
struct Armed {
    point: String,
    left: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("WEIR_CRASH_AT").ok()?;
            let (point, nth) = match spec.split_once(':') {
                Some((point, n)) => (point, n.parse().ok()?),
                None => (spec.as_str(), 1u64),
            };
            Some(Armed {
                point: point.to_string(),
                left: AtomicU64::new(nth.max(1)),
            })
        })
        .as_ref()
}

/// Whether the process is to crash at `point` now (and if so, it must).
pub fn due(point: &str) -> bool {
    match armed() {
        Some(armed) if armed.point == point => armed.left.fetch_sub(1, Ordering::Relaxed) == 1,
        _ => false,
    }
}

/// Aborts the process if it is due to crash at `point`.
pub fn point(point: &str) {
    if due(point) {
        crash(point);
    }
}

/// Aborts the process, saying where.
pub fn crash(point: &str) -> ! {
    eprintln!("weir: crashing at {point} (WEIR_CRASH_AT)");
    std::process::abort()
}
