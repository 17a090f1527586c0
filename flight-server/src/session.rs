//! Stream sessions: sequencing and named-stream resume, independent of the
//! wire protocol. Arrow Flight `DoPut` uses it, and so can any other ingest
//! protocol that numbers its requests.
//!
//! A session is one connection of a producer's stream into a table. Its
//! requests carry offsets (`offset_id`s), one per request, increasing by one.
//!
//! - An **anonymous** stream starts at offset 0 on every connection. A
//!   producer that resends after a failure gets at-least-once: the server
//!   cannot tell a resend from new rows.
//! - A **named** stream's offsets go on across connections and restarts. On
//!   open, the session says the stream's last durable offset `L` (-1 for a
//!   new name). Requests at or below `L` are resends: acked again, not
//!   written. The next request written must be `L + 1`; a request beyond the
//!   next one is a gap (`OUT_OF_RANGE`). So a producer that resends its
//!   unacknowledged suffix after any failure gets exactly once.
//!
//! A name has one session at a time. A new connection under a name takes
//! the stream over: the older session stops reading, waits for its writes
//! to be durable or failed, records how far it got and ends with `ABORTED`;
//! only then does the new one read `L`. That is what a producer that lost
//! its connection needs (the server may not have noticed yet), and it keeps
//! `L` exact. Where the offsets live is told in `weir_provider`'s `streams`
//! module.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedMutexGuard, watch};
use weir_provider::{StreamName, Table};

use crate::{Error, Result};

/// How long a new connection waits for the one it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

/// The open sessions of named streams, shared by every ingest protocol,
/// and the names retired for good.
#[derive(Debug)]
pub struct Sessions {
    leases: Mutex<HashMap<(String, StreamName), Arc<Lease>>>,
    retired: Retired,
}

/// The file of retired stream names, in the data directory: one
/// `<table id> <name>` per line.
pub const RETIRED_STREAMS_FILE: &str = "retired-streams";

/// The retired names, kept in [`RETIRED_STREAMS_FILE`] (appended and
/// fsynced before a retirement is answered).
#[derive(Debug)]
struct Retired {
    path: PathBuf,
    names: Mutex<HashSet<(String, StreamName)>>,
    /// One retirement written at a time.
    writing: tokio::sync::Mutex<()>,
}

/// Who holds a name: one session at a time.
#[derive(Debug)]
struct Lease {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Raised by every session that opens under the name; a session whose
    /// number is no longer the latest has been taken over.
    generation: watch::Sender<u64>,
}

/// A request's place in its stream: 0, 1, 2, ... ([`Offset::NONE`], -1,
/// stands before the first). Producers' offsets become one only through
/// [`Offset::new`], which refuses negative numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(i64);

impl Offset {
    /// Before the first request: nothing of the stream is durable.
    pub const NONE: Offset = Offset(-1);

    /// A producer's `offset_id`, which must not be negative.
    pub fn new(offset: i64) -> Result<Self> {
        if offset < 0 {
            return Err(Error::BadOffset(offset));
        }
        Ok(Self(offset))
    }

    /// As the wire says it: -1 for [`Offset::NONE`].
    pub fn get(self) -> i64 {
        self.0
    }

    /// The offset after this one; none after `i64::MAX`.
    pub fn next(self) -> Result<Offset> {
        self.0
            .checked_add(1)
            .map(Offset)
            .ok_or(Error::BadOffset(self.0))
    }
}

/// What a session does with a request's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// New rows: write them under this offset.
    Write(Offset),
    /// Already durable (a resend): acknowledge, do not write.
    Duplicate(Offset),
}

/// One connection of a stream.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    /// The stream's last durable offset when the session opened.
    resumed_at: Offset,
    /// The last offset this session received.
    last_seen: Option<Offset>,
    /// The WAL's failure count when the session opened: once a write
    /// failed, the session writes nothing more (see
    /// [`Table::enqueue_unsynced`]).
    wal_epoch: u64,
}

/// What the acknowledging side of a session needs: the table and name to
/// record durability in, and the hold on the name.
#[derive(Debug)]
pub struct Durability {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    table: Arc<Table>,
    name: Option<StreamName>,
    hold: Option<Hold>,
}

#[derive(Debug)]
struct Hold {
    sessions: Arc<Sessions>,
    key: (String, StreamName),
    lease: Arc<Lease>,
    mine: u64,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget the name's lease once nobody holds or waits for it.
        let mut leases = self.sessions.leases.lock();
        if Arc::strong_count(&self.lease) == 2 {
            leases.remove(&self.key);
        }
    }
}

impl Sessions {
    /// Sessions whose retired names are kept in `data_dir`.
    pub fn new(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            leases: Mutex::default(),
            retired: Retired::load(data_dir.join(RETIRED_STREAMS_FILE))?,
        })
    }

    /// Opens a session of `name` (anonymous if `None`) into `table`. A named
    /// session takes the name over from an older one, waiting for it to
    /// finish (see the module docs). A retired name is NOT_FOUND.
    pub async fn open(
        self: &Arc<Self>,
        table: Arc<Table>,
        name: Option<StreamName>,
    ) -> Result<Session> {
        let Some(name) = name else {
            return Ok(Session::new(table, None, None, Offset::NONE));
        };
        self.open_named(table, name, true).await
    }

    /// Retires `name` in `table` for good: recorded durably, then its open
    /// session (if any) is taken over and ends once its writes settled,
    /// and no session of it opens again, on any protocol. Idempotent.
    pub async fn retire(self: &Arc<Self>, table: Arc<Table>, name: StreamName) -> Result<()> {
        self.retired.retire(table.id(), &name).await?;
        match self.open_named(table, name, false).await {
            // A newer session took the name in between: it is refused once
            // it holds the name, since the retirement is recorded.
            Ok(_) | Err(Error::TakenOver { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn open_named(
        self: &Arc<Self>,
        table: Arc<Table>,
        name: StreamName,
        refuse_retired: bool,
    ) -> Result<Session> {
        let key = (table.id().to_string(), name.clone());
        let lease = Arc::clone(self.leases.lock().entry(key.clone()).or_insert_with(|| {
            Arc::new(Lease {
                turn: Arc::new(tokio::sync::Mutex::new(())),
                generation: watch::Sender::new(0),
            })
        }));
        let mut mine = 0;
        lease.generation.send_modify(|g| {
            *g += 1;
            mine = *g;
        });
        let turn = Arc::clone(&lease.turn).lock_owned();
        // From here the hold owns the lease: dropped on any way out, it
        // forgets the name when nobody else holds or waits for it.
        let mut hold = Hold {
            sessions: Arc::clone(self),
            key,
            lease,
            mine,
            guard: None,
        };
        let guard = tokio::time::timeout(TAKEOVER_WAIT, turn)
            .await
            .map_err(|_| Error::StreamBusy {
                stream: name.to_string(),
            })?;
        hold.guard = Some(guard);
        if *hold.lease.generation.borrow() != mine {
            return Err(Error::TakenOver {
                stream: name.to_string(),
            });
        }
        // Checked while holding the name: a retirement recorded before
        // this point is seen, and one recorded after takes this session
        // over.
        if refuse_retired && self.retired.contains(table.id(), &name) {
            return Err(Error::StreamNotFound {
                stream: name.to_string(),
                reason: "it was retired",
            });
        }
        // The table keeps only offsets it was given: -1 or above.
        let resumed_at = Offset(table.stream_offset(&name).await?.max(-1));
        Ok(Session::new(table, Some(name), Some(hold), resumed_at))
    }
}

impl Retired {
    fn load(path: PathBuf) -> Result<Self> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        // Each record is written as "\n<table> <name>\n": a torn last
        // record stays a line of its own, never glued to the next.
        let names = text
            .lines()
            .filter_map(|line| {
                let (table, name) = line.split_once(' ')?;
                Some((table.to_string(), StreamName::parse(name).ok()?))
            })
            .collect();
        Ok(Self {
            path,
            names: Mutex::new(names),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    fn contains(&self, table: &str, name: &StreamName) -> bool {
        self.names
            .lock()
            .contains(&(table.to_string(), name.clone()))
    }

    async fn retire(&self, table: &str, name: &StreamName) -> Result<()> {
        let _writing = self.writing.lock().await;
        if self.contains(table, name) {
            return Ok(());
        }
        let path = self.path.clone();
        let line = format!("\n{table} {name}\n");
        tokio::task::spawn_blocking(move || append_durably(&path, line.as_bytes()))
            .await
            .map_err(|e| Error::Internal(format!("recording a retirement failed: {e}")))??;
        self.names.lock().insert((table.to_string(), name.clone()));
        Ok(())
    }
}

/// Appends `bytes` to `path` and fsyncs it (and, for a new file, its
/// directory).
fn append_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(path, e))?;
    if created && let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

impl Session {
    fn new(table: Arc<Table>, name: Option<StreamName>, hold: Option<Hold>, at: Offset) -> Self {
        Self {
            wal_epoch: table.wal_epoch(),
            shared: Arc::new(Shared { table, name, hold }),
            resumed_at: at,
            last_seen: None,
        }
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.shared.table
    }

    /// The stream's name, `None` if anonymous.
    pub fn name(&self) -> Option<&StreamName> {
        self.shared.name.as_ref()
    }

    /// The stream's last durable offset when the session opened: -1 for an
    /// anonymous stream or a new name. The producer resumes after it.
    pub fn resumed_at(&self) -> Offset {
        self.resumed_at
    }

    /// The WAL's failure count when the session opened; its writes go
    /// in with it (see [`Table::enqueue_unsynced`]).
    pub fn wal_epoch(&self) -> u64 {
        self.wal_epoch
    }

    /// The offset the next request gets when it names none.
    pub fn next_offset(&self) -> Result<Offset> {
        self.last_seen
            .unwrap_or(self.resumed_at)
            .max(self.resumed_at)
            .next()
    }

    /// Decides what to do with a request at `offset` (`None`: the next).
    /// Offsets must increase by one, except that resends at or below
    /// [`Session::resumed_at`] may start anywhere: they are acknowledged
    /// without being written.
    pub fn admit(&mut self, offset: Option<i64>) -> Result<Admit> {
        let next = self.next_offset()?;
        let offset = match offset {
            Some(offset) => Offset::new(offset)?,
            None => next,
        };
        let increasing = self.last_seen.is_none_or(|last| offset > last);
        if increasing && offset <= self.resumed_at && self.name().is_some() {
            self.last_seen = Some(offset);
            return Ok(Admit::Duplicate(offset));
        }
        if offset != next {
            return Err(Error::OutOfOrder {
                expected: next.get(),
                got: offset.get(),
            });
        }
        self.last_seen = Some(offset);
        Ok(Admit::Write(offset))
    }

    /// Resolves when a newer connection has taken the stream over; never
    /// for an anonymous stream.
    pub async fn taken_over(&self) {
        self.shared.taken_over().await
    }

    /// The acknowledging side of this session.
    pub fn durability(&self) -> Durability {
        Durability {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Durability {
    /// Records that the request at `offset` is durable.
    pub fn durable(&self, offset: Offset) {
        if let Some(name) = &self.shared.name {
            self.shared.table.stream_durable(name, offset.get());
        }
    }

    /// The stream's name, `None` if anonymous.
    pub fn name(&self) -> Option<String> {
        self.shared.name.as_ref().map(ToString::to_string)
    }

    /// See [`Session::taken_over`].
    pub async fn taken_over(&self) {
        self.shared.taken_over().await
    }
}

impl Shared {
    async fn taken_over(&self) {
        let Some(hold) = &self.hold else {
            return std::future::pending().await;
        };
        let mut generation = hold.lease.generation.subscribe();
        // Never errors: the lease, and so the sender, outlives the hold.
        let _ = generation.wait_for(|g| *g != hold.mine).await;
    }
}
