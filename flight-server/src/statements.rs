//! FlightSQL statements: the tickets `DoGet` redeems, the prepared
//! statements clients hold, and the cancelling of queries.
//!
//! A ticket (`TicketStatementQuery.statement_handle`) is signed with a key
//! of the server's run, so `DoGet` runs only what this server issued, and
//! only queries:
//!
//! ```text
//! "w1" | tag (32 bytes, HMAC-SHA256 of what follows) | query id (16) | kind (1) | body
//!   kind 'q': a query; body = its SQL (UTF-8)
//!   kind 'p': a prepared query; body = its handle (16) | parameter generation (u64, BE)
//!   kind 'n': an INSERT that already ran; body = its row count (u64, BE)
//!   kind 'd': DDL that already ran; no body
//! ```
//!
//! The query id names one `GetFlightInfo` answer, so `CancelFlightInfo`
//! can stop its `DoGet` (or stop it before it starts).
//!
//! Prepared statements live in the server: a handle is 16 random bytes,
//! usable only by the client that made it. At most [`MAX_PREPARED`] are
//! held, with at most [`MAX_HELD_BYTES`] of SQL and bound parameters among
//! them, and each authenticated client at most a quarter of either; past a
//! bound, the least recently used (of that client, for its own share) is
//! closed. One unused for
//! [`PREPARED_IDLE`] is closed too, so handles of clients that went away
//! do not pile up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::watch;

use crate::auth::Principal;
use crate::{Error, Result};

/// Most prepared statements one server holds.
pub const MAX_PREPARED: usize = 1024;
/// Most bytes of SQL and bound parameters all prepared statements hold
/// together.
pub const MAX_HELD_BYTES: usize = 64 << 20;
/// What one client may hold, and one statement: a quarter of the server's.
const SHARE: usize = 4;
/// A prepared statement unused this long is closed.
pub const PREPARED_IDLE: Duration = Duration::from_secs(15 * 60);
/// Cancels remembered for queries that have not started.
const MAX_CANCELLED: usize = 4096;

const TICKET_PREFIX: &[u8] = b"w1";
const TAG_BYTES: usize = 32;
const ID_BYTES: usize = 16;

/// The random name of a prepared statement.
pub type Handle = [u8; ID_BYTES];
/// The random name of one query's execution (see [`Ticket`]).
pub type QueryId = [u8; ID_BYTES];

/// What a ticket redeems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ticket {
    /// Run this query.
    Query(String),
    /// Run a prepared query with the parameters bound at `generation`.
    Prepared { handle: Handle, generation: u64 },
    /// An INSERT ran and added this many rows.
    Inserted(u64),
    /// DDL ran.
    Done,
}

/// A prepared statement as its owner last left it.
#[derive(Debug, Clone)]
pub struct Bound {
    pub sql: String,
    /// The parameter rows bound with `DoPut`, if any.
    pub params: Option<RecordBatch>,
    /// Counts the bindings, so that a ticket names the one it was made for.
    pub generation: u64,
}

struct Entry {
    bound: Bound,
    owner: Option<String>,
    used: Instant,
}

/// The state of one `DoGet` being run, or cancelled before it ran.
#[derive(Default)]
struct Queries {
    /// Each running query's cancel signal and how many `DoGet`s run it.
    running: HashMap<QueryId, (watch::Sender<bool>, usize)>,
    /// Cancelled before they started.
    cancelled: Recent,
    /// Ran and ended: a cancel finds nothing to stop.
    finished: Recent,
}

/// The last [`MAX_CANCELLED`] query ids of a kind.
#[derive(Default)]
struct Recent {
    order: VecDeque<QueryId>,
    set: HashSet<QueryId>,
}

impl Recent {
    fn insert(&mut self, id: QueryId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > MAX_CANCELLED
                && let Some(oldest) = self.order.pop_front()
            {
                self.set.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: &QueryId) -> bool {
        self.set.contains(id)
    }
}

/// Tickets, prepared statements and running queries.
pub struct Statements {
    key: hmac::Key,
    random: SystemRandom,
    prepared: Mutex<HashMap<Handle, Entry>>,
    queries: Mutex<Queries>,
}

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements").finish_non_exhaustive()
    }
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The query was running and is being stopped.
    Running,
    /// It had not started; it will not.
    Before,
    /// It had run already (DDL, an INSERT): there is nothing to stop.
    NotCancellable,
}

/// The name a principal's prepared statements are filed under.
fn owner_of(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Anyone => None,
        Principal::Client(claims) => Some(claims.sub.clone()),
    }
}

fn unknown_handle() -> Error {
    Error::BadRequest(
        "unknown or closed prepared statement (one unused for 15 minutes is closed, as is the \
         least recently used past 1,024, and none outlives a restart): prepare it again"
            .into(),
    )
}

impl Statements {
    /// Fails only if the system has no randomness.
    pub fn new() -> Result<Self> {
        let random = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &random)
            .map_err(|_| Error::Internal("no system randomness for the ticket key".into()))?;
        Ok(Self {
            key,
            random,
            prepared: Mutex::new(HashMap::new()),
            queries: Mutex::new(Queries::default()),
        })
    }

    fn random_id(&self) -> Result<[u8; ID_BYTES]> {
        let mut id = [0; ID_BYTES];
        self.random
            .fill(&mut id)
            .map_err(|_| Error::Internal("no system randomness".into()))?;
        Ok(id)
    }

    /// A signed ticket for `what`, under a new query id.
    pub fn ticket(&self, what: &Ticket) -> Result<Vec<u8>> {
        let mut signed = self.random_id()?.to_vec();
        match what {
            Ticket::Query(sql) => {
                signed.push(b'q');
                signed.extend_from_slice(sql.as_bytes());
            }
            Ticket::Prepared { handle, generation } => {
                signed.push(b'p');
                signed.extend_from_slice(handle);
                signed.extend_from_slice(&generation.to_be_bytes());
            }
            Ticket::Inserted(rows) => {
                signed.push(b'n');
                signed.extend_from_slice(&rows.to_be_bytes());
            }
            Ticket::Done => signed.push(b'd'),
        }
        let tag = hmac::sign(&self.key, &signed);
        Ok([TICKET_PREFIX, tag.as_ref(), &signed].concat())
    }

    /// What a ticket this server issued redeems, and its query id.
    pub fn redeem(&self, ticket: &[u8]) -> Result<(QueryId, Ticket)> {
        let invalid = || {
            Error::BadRequest(
                "unknown, forged or expired statement ticket (tickets do not outlive a server \
                 restart): call GetFlightInfo again"
                    .into(),
            )
        };
        let rest = ticket.strip_prefix(TICKET_PREFIX).ok_or_else(invalid)?;
        if rest.len() < TAG_BYTES + ID_BYTES + 1 {
            return Err(invalid());
        }
        let (tag, signed) = rest.split_at(TAG_BYTES);
        hmac::verify(&self.key, signed, tag).map_err(|_| invalid())?;
        let (id, rest) = signed.split_at(ID_BYTES);
        let id: QueryId = id.try_into().map_err(|_| invalid())?;
        let (kind, body) = (rest[0], &rest[1..]);
        let u64_at = |bytes: &[u8]| -> Result<u64> {
            Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| invalid())?))
        };
        let what = match kind {
            b'q' => Ticket::Query(
                std::str::from_utf8(body)
                    .map_err(|_| invalid())?
                    .to_string(),
            ),
            b'p' if body.len() == ID_BYTES + 8 => Ticket::Prepared {
                handle: body[..ID_BYTES].try_into().map_err(|_| invalid())?,
                generation: u64_at(&body[ID_BYTES..])?,
            },
            b'n' => Ticket::Inserted(u64_at(body)?),
            b'd' if body.is_empty() => Ticket::Done,
            _ => return Err(invalid()),
        };
        Ok((id, what))
    }

    /// Holds `sql` as a prepared statement of `principal`; returns its
    /// handle. Closes the least recently used one past [`MAX_PREPARED`].
    pub fn prepare(&self, principal: &Principal, sql: String) -> Result<Handle> {
        if sql.len() > MAX_HELD_BYTES / SHARE {
            return Err(Error::MessageTooLarge(format!(
                "a prepared statement of {} bytes of SQL; one holds at most {}",
                sql.len(),
                MAX_HELD_BYTES / SHARE
            )));
        }
        let handle = self.random_id()?;
        let mut prepared = self.prepared.lock().expect("statements lock");
        prepared.insert(
            handle,
            Entry {
                bound: Bound {
                    sql,
                    params: None,
                    generation: 0,
                },
                owner: owner_of(principal),
                used: Instant::now(),
            },
        );
        evict(&mut prepared, &handle);
        Ok(handle)
    }

    /// The prepared statement `handle` of `principal`.
    pub fn get(&self, principal: &Principal, handle: &[u8]) -> Result<Bound> {
        let mut prepared = self.prepared.lock().expect("statements lock");
        let entry = owned(&mut prepared, principal, handle)?;
        entry.used = Instant::now();
        Ok(entry.bound.clone())
    }

    /// Binds `params` (parameter rows) to a prepared statement; returns the
    /// new generation.
    pub fn bind(&self, principal: &Principal, handle: &[u8], params: RecordBatch) -> Result<u64> {
        let bytes = params.get_array_memory_size();
        let mut prepared = self.prepared.lock().expect("statements lock");
        let entry = owned(&mut prepared, principal, handle)?;
        // With its SQL, within one statement's bound.
        if entry.bound.sql.len() + bytes > MAX_HELD_BYTES / SHARE {
            return Err(Error::MessageTooLarge(format!(
                "{bytes} bytes of parameters; a prepared statement holds at most {} with its \
                 SQL (execute an update with its parameters instead)",
                MAX_HELD_BYTES / SHARE
            )));
        }
        entry.used = Instant::now();
        entry.bound.params = Some(params);
        entry.bound.generation += 1;
        let generation = entry.bound.generation;
        let handle: Handle = handle.try_into().map_err(|_| unknown_handle())?;
        evict(&mut prepared, &handle);
        Ok(generation)
    }

    /// Closes a prepared statement of `principal`.
    pub fn close(&self, principal: &Principal, handle: &[u8]) -> Result<()> {
        let mut prepared = self.prepared.lock().expect("statements lock");
        owned(&mut prepared, principal, handle)?;
        prepared.remove(handle);
        Ok(())
    }

    /// How many prepared statements are held.
    #[cfg(test)]
    fn prepared_count(&self) -> usize {
        self.prepared.lock().expect("statements lock").len()
    }

    /// Marks query `id` as running until the returned guard drops; its
    /// receiver turns true on a cancel. Fails with CANCELLED if it was
    /// cancelled before it started.
    pub fn start(self: &std::sync::Arc<Self>, id: QueryId) -> Result<Running> {
        let mut queries = self.queries.lock().expect("queries lock");
        if queries.cancelled.contains(&id) {
            return Err(Error::Cancelled(
                "the query was cancelled before it ran".into(),
            ));
        }
        let (sender, count) = queries
            .running
            .entry(id)
            .or_insert_with(|| (watch::channel(false).0, 0));
        *count += 1;
        Ok(Running {
            cancel: sender.subscribe(),
            id,
            statements: std::sync::Arc::clone(self),
        })
    }

    /// Cancels the query of a ticket this server issued. A query that ran
    /// and ended is not cancellable (its ticket stays usable).
    pub fn cancel(&self, ticket: &[u8]) -> Result<Cancelled> {
        let (id, what) = self.redeem(ticket)?;
        if matches!(what, Ticket::Inserted(_) | Ticket::Done) {
            return Ok(Cancelled::NotCancellable);
        }
        let mut queries = self.queries.lock().expect("queries lock");
        if let Some((sender, _)) = queries.running.get(&id) {
            sender.send_replace(true);
            return Ok(Cancelled::Running);
        }
        if queries.finished.contains(&id) {
            return Ok(Cancelled::NotCancellable);
        }
        queries.cancelled.insert(id);
        Ok(Cancelled::Before)
    }
}

/// A query being run (see [`Statements::start`]).
pub struct Running {
    /// Turns true when the query is cancelled.
    pub cancel: watch::Receiver<bool>,
    id: QueryId,
    statements: std::sync::Arc<Statements>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut queries = self.statements.queries.lock().expect("queries lock");
        if let Some((_, count)) = queries.running.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                queries.running.remove(&self.id);
                queries.finished.insert(self.id);
            }
        }
    }
}

/// The entry `handle` if `principal` owns it.
fn owned<'a>(
    prepared: &'a mut HashMap<Handle, Entry>,
    principal: &Principal,
    handle: &[u8],
) -> Result<&'a mut Entry> {
    let owner = owner_of(principal);
    match prepared.get_mut(handle) {
        Some(entry) if entry.used.elapsed() < PREPARED_IDLE && entry.owner == owner => Ok(entry),
        _ => Err(unknown_handle()),
    }
}

/// What a prepared statement holds: its SQL and bound parameters.
fn held_bytes(entry: &Entry) -> usize {
    entry.bound.sql.len()
        + entry
            .bound
            .params
            .as_ref()
            .map_or(0, RecordBatch::get_array_memory_size)
}

/// Closes idle statements; then, while `keep`'s owner (an authenticated
/// client) holds more than its share, its least recently used; then,
/// while the server holds more than its bounds, the least recently used
/// of all. Never `keep` itself.
fn evict(prepared: &mut HashMap<Handle, Entry>, keep: &Handle) {
    prepared.retain(|handle, entry| handle == keep || entry.used.elapsed() < PREPARED_IDLE);
    if let Some(owner) = prepared.get(keep).and_then(|e| e.owner.clone()) {
        let share = (MAX_PREPARED / SHARE, MAX_HELD_BYTES / SHARE);
        shrink(prepared, keep, Some(&owner), share);
    }
    shrink(prepared, keep, None, (MAX_PREPARED, MAX_HELD_BYTES));
}

/// Closes the least recently used statements of `owner` (of everyone if
/// `None`) but `keep`, until they number and hold at most `(count, bytes)`.
fn shrink(
    prepared: &mut HashMap<Handle, Entry>,
    keep: &Handle,
    owner: Option<&str>,
    (count, bytes): (usize, usize),
) {
    let of_owner = |e: &Entry| owner.is_none_or(|o| e.owner.as_deref() == Some(o));
    loop {
        let (n, held) = prepared
            .values()
            .filter(|e| of_owner(e))
            .fold((0, 0), |(n, held), e| (n + 1, held + held_bytes(e)));
        if n <= count && held <= bytes {
            return;
        }
        let Some(oldest) = prepared
            .iter()
            .filter(|(handle, e)| *handle != keep && of_owner(e))
            .min_by_key(|(_, e)| e.used)
            .map(|(handle, _)| *handle)
        else {
            return;
        };
        prepared.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Claims;

    fn client(name: &str) -> Principal {
        Principal::Client(Claims {
            sub: name.into(),
            write: vec![],
            read: vec![],
            ddl: false,
            exp: u64::MAX,
        })
    }

    #[test]
    fn tickets_redeem_what_they_were_made_for_and_nothing_altered() {
        let statements = Statements::new().unwrap();
        for what in [
            Ticket::Query("SELECT 1".into()),
            Ticket::Prepared {
                handle: [7; 16],
                generation: 3,
            },
            Ticket::Inserted(12),
            Ticket::Done,
        ] {
            let ticket = statements.ticket(&what).unwrap();
            assert_eq!(statements.redeem(&ticket).unwrap().1, what);
            let mut altered = ticket.clone();
            *altered.last_mut().unwrap() ^= 1;
            assert!(statements.redeem(&altered).is_err());
        }
        // Another run's key, and bytes that were never a ticket.
        let other = Statements::new().unwrap();
        let ticket = other.ticket(&Ticket::Query("DROP TABLE t".into())).unwrap();
        assert!(statements.redeem(&ticket).is_err());
        assert!(statements.redeem(b"w1").is_err());
        assert!(statements.redeem(b"q1:DROP TABLE t").is_err());
    }

    #[test]
    fn prepared_statements_belong_to_their_client_and_are_bounded() {
        let statements = Statements::new().unwrap();
        let alice = client("alice");
        let handle = statements.prepare(&alice, "SELECT $1".into()).unwrap();
        assert_eq!(statements.get(&alice, &handle).unwrap().sql, "SELECT $1");
        assert!(statements.get(&client("bob"), &handle).is_err());
        assert!(statements.get(&Principal::Anyone, &handle).is_err());
        assert!(statements.close(&client("bob"), &handle).is_err());

        let params = RecordBatch::try_from_iter([(
            "$1",
            Arc::new(arrow::array::Int64Array::from(vec![1])) as _,
        )])
        .unwrap();
        assert_eq!(statements.bind(&alice, &handle, params.clone()).unwrap(), 1);
        assert_eq!(statements.bind(&alice, &handle, params).unwrap(), 2);
        assert_eq!(statements.get(&alice, &handle).unwrap().generation, 2);

        // A client holds at most its share: its own least recently used
        // go first, never another client's.
        let bob = client("bob");
        let bobs = statements.prepare(&bob, "SELECT 'bob'".into()).unwrap();
        for i in 0..MAX_PREPARED {
            statements.prepare(&alice, format!("SELECT {i}")).unwrap();
        }
        assert_eq!(statements.prepared_count(), MAX_PREPARED / SHARE + 1);
        assert!(statements.get(&alice, &handle).is_err());
        assert!(statements.get(&bob, &bobs).is_ok());
        let last = statements.prepare(&alice, "SELECT 2".into()).unwrap();
        statements.close(&alice, &last).unwrap();
        assert!(statements.get(&alice, &last).is_err());

        // Without authentication the server's bounds hold, SQL counted.
        let open = Statements::new().unwrap();
        for i in 0..MAX_PREPARED + 10 {
            open.prepare(&Principal::Anyone, format!("SELECT {i}"))
                .unwrap();
        }
        assert_eq!(open.prepared_count(), MAX_PREPARED);
        let big = "x".repeat(MAX_HELD_BYTES / SHARE - 100);
        for _ in 0..SHARE + 1 {
            open.prepare(&Principal::Anyone, big.clone()).unwrap();
        }
        let held: usize = open.prepared.lock().unwrap().values().map(held_bytes).sum();
        assert!(held <= MAX_HELD_BYTES, "{held}");
        let too_big = "x".repeat(MAX_HELD_BYTES / SHARE + 1);
        assert!(matches!(
            open.prepare(&Principal::Anyone, too_big),
            Err(Error::MessageTooLarge(_))
        ));
        // A bind counts the statement's SQL.
        let long = open.prepare(&Principal::Anyone, big.clone()).unwrap();
        let params = RecordBatch::try_from_iter([(
            "$1",
            Arc::new(arrow::array::Int64Array::from(vec![1; 1000])) as _,
        )])
        .unwrap();
        assert!(matches!(
            open.bind(&Principal::Anyone, &long, params),
            Err(Error::MessageTooLarge(_))
        ));
    }

    #[test]
    fn a_cancel_stops_a_running_query_or_one_not_started() {
        let statements = Arc::new(Statements::new().unwrap());
        let running = statements
            .ticket(&Ticket::Query("SELECT 1".into()))
            .unwrap();
        let (id, _) = statements.redeem(&running).unwrap();
        let run = statements.start(id).unwrap();
        assert!(!*run.cancel.borrow());
        assert_eq!(statements.cancel(&running).unwrap(), Cancelled::Running);
        assert!(*run.cancel.borrow());
        drop(run);

        let later = statements
            .ticket(&Ticket::Query("SELECT 2".into()))
            .unwrap();
        assert_eq!(statements.cancel(&later).unwrap(), Cancelled::Before);
        let (id, _) = statements.redeem(&later).unwrap();
        assert!(matches!(statements.start(id), Err(Error::Cancelled(_))));

        // Once it ran and ended, a cancel finds nothing, and the ticket
        // still runs.
        assert_eq!(
            statements.cancel(&running).unwrap(),
            Cancelled::NotCancellable
        );
        assert!(statements.start(id_of(&statements, &running)).is_ok());

        let done = statements.ticket(&Ticket::Done).unwrap();
        assert_eq!(statements.cancel(&done).unwrap(), Cancelled::NotCancellable);
    }

    fn id_of(statements: &Statements, ticket: &[u8]) -> QueryId {
        statements.redeem(ticket).unwrap().0
    }
}
