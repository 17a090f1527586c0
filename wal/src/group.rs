//! The group-commit buffer: synchronous, no I/O.
//!
//! `enqueue` pushes a record here: it gets the next position under the lock
//! (so callers that enqueue in order get increasing positions) and waits in
//! the queue with the channel its reply goes to. The writer thread takes the
//! whole queue (up to a byte limit) as one group, writes and fsyncs it, and
//! answers every reply. Records pushed while that fsync is in flight wait
//! for the next take: they share the next fsync.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::{Error, Result, WalPosition};

/// A queued record and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Pending {
    pub position: WalPosition,
    pub payload: Bytes,
    pub reply: oneshot::Sender<Result<WalPosition>>,
}

impl Pending {
    /// Answers the appender; one that stopped waiting is not an error.
    pub fn answer(self, outcome: Result<WalPosition>) {
        let _ = self.reply.send(outcome);
    }
}

#[derive(Debug)]
struct State {
    /// Position the next pushed record gets.
    next: WalPosition,
    queue: VecDeque<Pending>,
    /// No more pushes; the writer drains the queue and stops.
    closed: bool,
    /// Why the log is poisoned, if it is.
    poisoned: Option<Poison>,
    /// How many times the log was poisoned.
    epoch: u64,
}

/// Why the log refuses writes.
#[derive(Debug, Clone)]
pub(crate) struct Poison {
    pub reason: String,
    /// The disk was full.
    pub full: bool,
    /// The writer has cut the failed writes off the segment: the log can
    /// take writes again once its user has dropped what was not durable.
    pub repaired: bool,
}

impl Poison {
    pub fn error(&self) -> Error {
        if self.full {
            Error::Full(self.reason.clone())
        } else {
            Error::Failed(self.reason.clone())
        }
    }
}

/// Pending records shared by the appenders and the writer thread.
#[derive(Debug)]
pub(crate) struct GroupBuffer {
    state: Mutex<State>,
    wake_writer: Condvar,
}

impl GroupBuffer {
    /// An empty buffer whose first record gets position `next`.
    pub fn new(next: WalPosition) -> Self {
        GroupBuffer {
            state: Mutex::new(State {
                next,
                queue: VecDeque::new(),
                closed: false,
                poisoned: None,
                epoch: 0,
            }),
            wake_writer: Condvar::new(),
        }
    }

    /// Assigns the next position to `payload` and queues it; with
    /// `epoch`, only if the log was not poisoned since that epoch.
    pub fn push(
        &self,
        payload: Bytes,
        epoch: Option<u64>,
    ) -> Result<(WalPosition, oneshot::Receiver<Result<WalPosition>>)> {
        let (reply, receiver) = oneshot::channel();
        let mut state = self.state.lock();
        if let Some(poison) = &state.poisoned {
            return Err(poison.error());
        }
        if epoch.is_some_and(|epoch| epoch != state.epoch) {
            return Err(Error::Failed(
                "a write failed since this writer started, so later writes would leave a hole; \
                 start again and resend what was not acknowledged"
                    .into(),
            ));
        }
        if state.closed {
            return Err(Error::Closed);
        }
        let position = state.next;
        state.next = position.next();
        state.queue.push_back(Pending {
            position,
            payload,
            reply,
        });
        drop(state);
        self.wake_writer.notify_one();
        Ok((position, receiver))
    }

    /// Blocks until records are queued, then takes them in position order, as
    /// many as fit in `max_bytes` of payload but at least one. `None` once the
    /// buffer is closed and drained, or poisoned.
    pub fn take_group(&self, max_bytes: u64) -> Option<Vec<Pending>> {
        let mut state = self.state.lock();
        loop {
            if state.closed && (state.queue.is_empty() || state.poisoned.is_some()) {
                return None;
            }
            // While poisoned the queue is empty: wait for a resume.
            if state.poisoned.is_none() && !state.queue.is_empty() {
                break;
            }
            self.wake_writer.wait(&mut state);
        }
        let mut group = Vec::new();
        let mut bytes = 0u64;
        while let Some(pending) = state.queue.pop_front() {
            let len = pending.payload.len() as u64;
            if !group.is_empty() && bytes + len > max_bytes {
                state.queue.push_front(pending);
                break;
            }
            bytes += len;
            group.push(pending);
        }
        Some(group)
    }

    /// Refuses further pushes; what is queued stays for the writer to drain.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.wake_writer.notify_all();
    }

    /// Poisons the buffer: every later push fails with [`Error::Failed`]
    /// (or [`Error::Full`] if `full`) until [`GroupBuffer::resume`].
    /// Returns the records still queued, for the caller to fail.
    pub fn poison(&self, reason: String, full: bool) -> Vec<Pending> {
        let mut state = self.state.lock();
        if state.poisoned.is_none() {
            state.epoch += 1;
        }
        state.poisoned.get_or_insert(Poison {
            reason,
            full,
            repaired: false,
        });
        let rest = state.queue.drain(..).collect();
        drop(state);
        self.wake_writer.notify_all();
        rest
    }

    /// How many times the buffer was poisoned so far.
    pub fn epoch(&self) -> u64 {
        self.state.lock().epoch
    }

    /// Why the buffer is poisoned, if it is.
    pub fn poisoned(&self) -> Option<Poison> {
        self.state.lock().poisoned.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// The writer cut the failed writes off: a resume may follow.
    pub fn mark_repaired(&self) {
        if let Some(poison) = self.state.lock().poisoned.as_mut() {
            poison.repaired = true;
        }
    }

    /// Takes pushes again, numbered from `next`, if the writer has repaired
    /// the log. Returns whether it did.
    pub fn resume(&self, next: WalPosition) -> bool {
        let mut state = self.state.lock();
        if !state.poisoned.as_ref().is_some_and(|p| p.repaired) || state.closed {
            return false;
        }
        state.poisoned = None;
        state.next = next;
        drop(state);
        self.wake_writer.notify_all();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn payload(len: usize) -> Bytes {
        Bytes::from(vec![7; len])
    }

    #[test]
    fn positions_are_assigned_in_push_order() {
        let buffer = GroupBuffer::new(WalPosition(10));
        let positions: Vec<_> = (0..5)
            .map(|_| buffer.push(payload(1), None).unwrap().0)
            .collect();
        assert_eq!(positions, (10..15).map(WalPosition).collect::<Vec<_>>());
        let group = buffer.take_group(u64::MAX).unwrap();
        let taken: Vec<_> = group.iter().map(|p| p.position).collect();
        assert_eq!(taken, positions);
    }

    #[test]
    fn a_group_respects_the_byte_limit_but_takes_at_least_one() {
        let buffer = GroupBuffer::new(WalPosition(1));
        for len in [100, 50, 60, 500, 10] {
            buffer.push(payload(len), None).unwrap();
        }
        let sizes = |group: Vec<Pending>| group.iter().map(|p| p.payload.len()).collect::<Vec<_>>();
        assert_eq!(sizes(buffer.take_group(160).unwrap()), vec![100, 50]);
        assert_eq!(sizes(buffer.take_group(160).unwrap()), vec![60]);
        assert_eq!(sizes(buffer.take_group(160).unwrap()), vec![500]);
        assert_eq!(sizes(buffer.take_group(160).unwrap()), vec![10]);
    }

    #[test]
    fn close_refuses_pushes_and_lets_the_writer_drain() {
        let buffer = GroupBuffer::new(WalPosition(1));
        buffer.push(payload(1), None).unwrap();
        buffer.close();
        assert!(matches!(buffer.push(payload(1), None), Err(Error::Closed)));
        assert_eq!(buffer.take_group(u64::MAX).unwrap().len(), 1);
        assert!(buffer.take_group(u64::MAX).is_none());
    }

    #[test]
    fn poison_fails_pushes_and_hands_back_the_queue() {
        let buffer = GroupBuffer::new(WalPosition(1));
        buffer.push(payload(1), None).unwrap();
        buffer.push(payload(1), None).unwrap();
        let rest = buffer.poison("disk on fire".into(), false);
        assert_eq!(rest.len(), 2);
        let Err(Error::Failed(reason)) = buffer.push(payload(1), None) else {
            panic!("a poisoned buffer must refuse pushes");
        };
        assert_eq!(reason, "disk on fire");
        // The first reason sticks.
        buffer.poison("second".into(), true);
        let poison = buffer.poisoned().unwrap();
        assert_eq!(poison.reason, "disk on fire");
        assert!(!poison.full);
        // A resume takes only after the writer's repair.
        assert!(!buffer.resume(WalPosition(1)));
        buffer.mark_repaired();
        assert!(buffer.resume(WalPosition(1)));
        assert_eq!(buffer.push(payload(1), None).unwrap().0, WalPosition(1));
        // A writer that started before the failure is refused for good:
        // its next record would follow one that was lost.
        assert_eq!(buffer.epoch(), 1);
        assert!(matches!(
            buffer.push(payload(1), Some(0)),
            Err(Error::Failed(_))
        ));
        assert_eq!(buffer.push(payload(1), Some(1)).unwrap().0, WalPosition(2));
        // Poisoned and closed, the writer is told to stop.
        buffer.poison("again".into(), false);
        buffer.close();
        assert!(buffer.take_group(u64::MAX).is_none());
    }

    #[test]
    fn take_group_waits_for_a_push() {
        let buffer = Arc::new(GroupBuffer::new(WalPosition(1)));
        let writer = {
            let buffer = Arc::clone(&buffer);
            std::thread::spawn(move || buffer.take_group(u64::MAX).map(|g| g.len()))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !writer.is_finished(),
            "take_group returned with nothing queued"
        );
        buffer.push(payload(1), None).unwrap();
        assert_eq!(writer.join().unwrap(), Some(1));
    }
}
