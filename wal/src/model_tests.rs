//! A model-based property test of the whole log: random appends (one at a
//! time and in concurrent groups), truncations, clean reboots and crashes
//! (with the unsynced bytes lost, or torn and written back out of order),
//! compared after every reopen against a simple model of what was acked.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::mem_storage::MemStorage;
use crate::{Wal, WalConfig, WalPosition, WalRecord};

#[derive(Debug, Clone)]
enum Op {
    /// `count` records enqueued at once (so they may share a group), then
    /// awaited: all acked.
    Append { count: usize, len: usize },
    /// Deletes the segments wholly at or below `back` positions under the
    /// durable one.
    Truncate { back: u64 },
    /// Closes the log and opens it again.
    Reboot,
    /// `count` records enqueued while fsyncs hang, then a crash: they are
    /// not acked, and the crash keeps none (`seed: None`) or a torn,
    /// out-of-order part of them.
    Crash {
        count: usize,
        len: usize,
        seed: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..6usize, 0..400usize).prop_map(|(count, len)| Op::Append { count, len }),
        1 => (0..20u64).prop_map(|back| Op::Truncate { back }),
        1 => Just(Op::Reboot),
        2 => (0..4usize, 1..600usize, proptest::option::of(any::<u64>()))
            .prop_map(|(count, len, seed)| Op::Crash { count, len, seed }),
    ]
}

/// What the log must hold.
#[derive(Debug, Default)]
struct Model {
    /// Acked records not yet truncated away, by position.
    acked: Vec<(u64, Bytes)>,
    /// Records at or below this may have been truncated.
    floor: u64,
    /// Records written but not acked when the log crashed: a crash may keep
    /// a prefix of them.
    in_flight: Vec<(u64, Bytes)>,
    /// The highest position of a record that was acked or replayed: the
    /// log never hands it out again (a position handed out to a record
    /// that a crash lost before it was durable may be).
    highest: u64,
}

impl Model {
    /// Checks a replay against the model and makes it the model's state.
    fn reopened(&mut self, replayed: &[WalRecord]) -> Result<(), TestCaseError> {
        let got: Vec<(u64, Bytes)> = replayed
            .iter()
            .map(|r| (r.position.get(), r.payload.clone()))
            .collect();
        for pair in got.windows(2) {
            prop_assert_eq!(pair[1].0, pair[0].0 + 1, "positions are contiguous");
        }
        let mut acked = self.acked.iter().peekable();
        let mut extra = self.in_flight.iter();
        for (position, payload) in &got {
            while acked
                .next_if(|(p, _)| p < position && *p <= self.floor)
                .is_some()
            {}
            match acked.next() {
                Some((p, expected)) => {
                    prop_assert_eq!(p, position);
                    prop_assert_eq!(expected, payload);
                }
                // Beyond every acked record: only what was in flight, in
                // order, may follow.
                None => prop_assert_eq!(extra.next(), Some(&(*position, payload.clone()))),
            }
        }
        let missing: Vec<u64> = acked
            .filter(|(p, _)| *p > self.floor)
            .map(|(p, _)| *p)
            .collect();
        prop_assert!(missing.is_empty(), "acked records lost: {:?}", missing);
        if let Some((last, _)) = got.last() {
            self.highest = self.highest.max(*last);
        }
        self.acked = got;
        self.in_flight.clear();
        Ok(())
    }
}

fn config() -> WalConfig {
    WalConfig {
        segment_target_bytes: 1500,
        ..WalConfig::for_tests()
    }
}

fn open(storage: &MemStorage) -> (Wal, Vec<WalRecord>) {
    let (wal, replay) =
        Wal::open_with_storage(Path::new("/wal"), config(), Arc::new(storage.clone()))
            .expect("the log opens after any crash");
    (wal, replay.collect_all().unwrap())
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut storage = MemStorage::default();
    let (mut wal, replayed) = open(&storage);
    prop_assert!(replayed.is_empty());
    let mut model = Model::default();
    let mut serial = 0u64;
    let mut payload = |len: usize| {
        serial += 1;
        let mut bytes = serial.to_le_bytes().to_vec();
        bytes.resize(len.max(8), (serial % 251) as u8);
        Bytes::from(bytes)
    };
    for op in ops {
        match op {
            Op::Append { count, len } => {
                let pending: Vec<_> = (0..count)
                    .map(|_| {
                        let p = payload(len);
                        (p.clone(), wal.enqueue(p).unwrap())
                    })
                    .collect();
                for (p, pending) in pending {
                    let position = block_on(pending).unwrap().get();
                    prop_assert!(position > model.highest, "positions are never reused");
                    model.highest = position;
                    model.acked.push((position, p));
                }
            }
            Op::Truncate { back } => {
                let through = wal.durable_position().get().saturating_sub(back);
                wal.truncate_through(WalPosition(through)).unwrap();
                model.floor = model.floor.max(through);
            }
            Op::Reboot => {
                wal.close().unwrap();
                let (reopened, replayed) = open(&storage);
                wal = reopened;
                model.reopened(&replayed)?;
            }
            Op::Crash { count, len, seed } => {
                storage.hold_syncs(true);
                for _ in 0..count {
                    let p = payload(len);
                    let position = wal.enqueue(p.clone()).unwrap().position().get();
                    model.in_flight.push((position, p));
                }
                // Let the writer write what it will before the power goes.
                std::thread::sleep(Duration::from_millis(2));
                let after = match seed {
                    None => storage.crash_copy(),
                    Some(seed) => storage.torn_copy(seed),
                };
                storage.hold_syncs(false);
                wal.close().unwrap();
                storage = after;
                let (reopened, replayed) = open(&storage);
                wal = reopened;
                model.reopened(&replayed)?;
            }
        }
    }
    wal.close().unwrap();
    let (_wal, replayed) = open(&storage);
    model.reopened(&replayed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_holds_what_was_acked_through_reboots_and_crashes(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(ops)?;
    }
}
