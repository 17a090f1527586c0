//! The decode loop: one pass over each record's bytes, straight into the
//! column builders.
//!
//! A record is decoded as one *row* of the root struct level. Fields that
//! come in number order and are plain scalars go through [`fast_run`],
//! which compares the next bytes with the expected field's precomputed tag
//! and stores the value without looking anything up. For any other field
//! the loop reads the tag, finds the field through the level's dense
//! number table, checks the wire type and runs the field's [`Op`]. A
//! per-level "seen" stamp per field tells a first occurrence (append) from a
//! repeated one (overwrite: last value wins; for a nested message, keep
//! filling the same open child row, which is protobuf's merge). When the
//! record ends, [`Decoding::close_row`] fills every field that did not occur
//! with its default or null, ends list and map rows, and closes open child
//! rows. Nothing is allocated per record: stamps are compared, not cleared.

use super::columns::{Columns, store};
use super::error::DecodeErrorKind;
use super::ops::Op;
use super::plan::{Card, FastKind, FastTag, MAX_DEPTH, NodeId, PathId, Plan};
use super::wire::{self, WireType, read_fixed32, read_fixed64, read_len, read_varint_inline};
use crate::error::{Error, RecordProblem};

/// A decode error before the record index is known: the path id and what.
#[derive(Debug)]
pub(crate) struct Fail {
    pub path: PathId,
    pub kind: DecodeErrorKind,
}

/// Per struct level state of the row being decoded.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// `seen[i] == stamp` when field `i` occurred in the open row.
    pub seen: Vec<u32>,
    /// Identifies the open row; bumped when a row opens.
    pub stamp: u32,
    /// Number of singular fields seen in the open row.
    pub nseen: u32,
    /// Per oneof: (stamp, field index) of the member set in the open row.
    pub oneof: Vec<(u32, u16)>,
    /// Rows closed so far (the level's length).
    pub rows: usize,
}

/// The state of one `decode` call: the plan and the builders.
#[derive(Debug)]
pub(crate) struct Decoding<'p> {
    pub plan: &'p Plan,
    pub cols: Columns,
    pub nodes: Vec<NodeState>,
    /// Reused by map key de-duplication.
    pub scratch: Vec<u32>,
}

impl<'p> Decoding<'p> {
    /// Fresh builders for `rows` records: exactly that many for the root's
    /// [`super::columns::Wide`] columns (more are refused), about as many
    /// for the rest.
    pub fn new(plan: &'p Plan, rows: usize) -> Self {
        let nodes = plan
            .nodes
            .iter()
            .map(|n| NodeState {
                seen: vec![0; n.fields.len()],
                stamp: 0,
                nseen: 0,
                oneof: vec![(0, 0); usize::from(n.n_oneofs)],
                rows: 0,
            })
            .collect();
        Decoding {
            plan,
            cols: Columns::new(&plan.counts, rows),
            nodes,
            scratch: Vec::new(),
        }
    }

    /// Decodes one record as one row of the root level.
    pub fn record(&mut self, index: usize, bytes: &[u8]) -> Result<(), Error> {
        self.open_row(0);
        self.parse_message(0, bytes, 0)
            .and_then(|()| self.close_row(0))
            .map_err(|f| Error::Record {
                record: index,
                problem: RecordProblem::Protobuf {
                    path: self.plan.paths[f.path as usize].to_string(),
                    kind: f.kind,
                },
            })
    }

    /// Decodes the fields of one message payload into the open row of `node`.
    pub(crate) fn parse_message(
        &mut self,
        node: NodeId,
        buf: &[u8],
        depth: usize,
    ) -> Result<(), Fail> {
        if depth > MAX_DEPTH {
            let path = self.plan.nodes[node as usize].path;
            return Err(Fail {
                path,
                kind: DecodeErrorKind::TooDeep(MAX_DEPTH),
            });
        }
        // The open row's seen stamps live in locals while the loop runs (no
        // reloads through `self`); nested messages use other nodes' state.
        let st = &mut self.nodes[node as usize];
        let fresh = st.nseen == 0;
        let mut seen = std::mem::take(&mut st.seen);
        let mut row = OpenRow {
            seen: &mut seen,
            stamp: st.stamp,
            newly_seen: 0,
        };
        let result = self.parse_fields(node, buf, depth, &mut row, fresh);
        let newly_seen = row.newly_seen;
        let st = &mut self.nodes[node as usize];
        st.seen = seen;
        st.nseen = st.nseen.wrapping_add(newly_seen);
        result
    }

    /// The decode loop proper (see the module doc).
    #[inline(always)]
    fn parse_fields(
        &mut self,
        node: NodeId,
        mut buf: &[u8],
        depth: usize,
        row: &mut OpenRow<'_>,
        fresh: bool,
    ) -> Result<(), Fail> {
        let plan = self.plan;
        let n = &plan.nodes[node as usize];
        // Position in `n.fast` of the field expected next.
        let mut expect = 0usize;
        // One past the highest singular field seen in the open row: no field
        // at or above it has been seen yet. Unknown when the row was not
        // empty as this payload began (a merge): `usize::MAX` then, which
        // `max` keeps.
        let mut unseen_from = if fresh { 0 } else { usize::MAX };
        while !buf.is_empty() {
            // The common case first: a run of expected singular scalars
            // (not worth a call when a list or message is expected).
            if n.fast
                .get(expect)
                .is_some_and(|f| f.kind != FastKind::Generic)
            {
                let from = (
                    &mut self.cols,
                    &n.fast[..],
                    &mut *row.seen,
                    row.stamp,
                    buf,
                    expect,
                    self.nodes[node as usize].rows,
                );
                let run = match (expect >= unseen_from, n.lean) {
                    (true, true) => fast_run::<true, true>(from),
                    (true, false) => fast_run::<true, false>(from),
                    (false, true) => fast_run::<false, true>(from),
                    (false, false) => fast_run::<false, false>(from),
                }
                .map_err(|(index, kind)| Fail {
                    path: n.fields[index].path,
                    kind,
                })?;
                unseen_from = unseen_from.max(run.expect);
                buf = run.rest;
                expect = run.expect;
                row.newly_seen = row.newly_seen.wrapping_add(run.newly_seen);
                if buf.is_empty() {
                    break;
                }
            }
            let guess = n.fast.get(expect).filter(|fast| fast.matches(buf));
            let (index, wire) = match guess {
                // Fields are in number order: the position is the index.
                Some(fast) => {
                    buf = &buf[usize::from(fast.len)..];
                    (expect, fast.wire)
                }
                None => {
                    let (number, wire) =
                        wire::read_tag(&mut buf).map_err(|kind| Fail { path: n.path, kind })?;
                    match n.find(number) {
                        Some(index) => (index, wire),
                        None => {
                            let mut rest = buf;
                            wire::skip(wire, &mut rest)
                                .map_err(|kind| Fail { path: n.path, kind })?;
                            buf = rest;
                            continue;
                        }
                    }
                }
            };
            let f = &n.fields[index];
            expect = f.next as usize;
            match f.card {
                Card::Singular => {
                    if wire != f.wire {
                        return Err(wrong_wire(f.path, f.wire, wire));
                    }
                    unseen_from = unseen_from.max(index + 1);
                    let first = row.seen[index] != row.stamp;
                    if first {
                        row.seen[index] = row.stamp;
                        row.newly_seen = row.newly_seen.wrapping_add(1);
                        if let Some(oneof) = f.oneof
                            && let Some(cleared) = self.switch_oneof(node, oneof, index, row.stamp)
                        {
                            row.seen[cleared] = row.stamp.wrapping_sub(1);
                            row.newly_seen = row.newly_seen.wrapping_sub(1);
                        }
                    }
                    self.apply(&f.op, first, &mut buf, f.path, depth)?;
                }
                Card::Repeated { packable, .. } => {
                    if wire == f.wire {
                        self.apply(&f.op, true, &mut buf, f.path, depth)?;
                        if let Op::Message(child) = f.op {
                            self.close_row(child)?;
                        }
                    } else if wire == WireType::Len && packable {
                        let mut packed =
                            wire::read_len(&mut buf).map_err(|kind| Fail { path: f.path, kind })?;
                        while !packed.is_empty() {
                            self.apply(&f.op, true, &mut packed, f.path, depth)?;
                        }
                    } else {
                        return Err(wrong_wire(f.path, f.wire, wire));
                    }
                }
                Card::Map { entry, .. } => {
                    if wire != WireType::Len {
                        return Err(wrong_wire(f.path, WireType::Len, wire));
                    }
                    self.apply(&f.op, true, &mut buf, f.path, depth)?;
                    self.close_row(entry)?;
                }
            }
        }
        Ok(())
    }

    /// Records that oneof member `index` of `node` is set in the open row;
    /// if another member was set before it, drops that member's value and
    /// returns its index.
    #[inline(never)]
    fn switch_oneof(
        &mut self,
        node: NodeId,
        oneof: u16,
        index: usize,
        stamp: u32,
    ) -> Option<usize> {
        let slot = &mut self.nodes[node as usize].oneof[usize::from(oneof)];
        let previous = *slot;
        *slot = (stamp, index as u16);
        let cleared = usize::from(previous.1);
        if previous.0 != stamp || cleared == index {
            return None;
        }
        self.clear_field(node, cleared);
        Some(cleared)
    }
}

/// The seen stamps of the open row of the level being parsed, taken out of
/// its [`NodeState`] while the loop runs.
pub(crate) struct OpenRow<'s> {
    pub seen: &'s mut [u32],
    pub stamp: u32,
    /// Fields seen for the first time by this payload (net of oneof
    /// switches).
    pub newly_seen: u32,
}

/// Where [`fast_run`] stopped.
struct FastRun<'b> {
    /// The bytes after the last field it decoded.
    rest: &'b [u8],
    /// Position in the fast table of the field expected next.
    expect: usize,
    /// How many fields it saw for the first time in the open row.
    newly_seen: u32,
}

/// Decodes fields for as long as the next bytes are the tag of the field
/// expected next and that field is a fast-path scalar (see [`FastKind`]):
/// for flat messages whose fields come in number order, the whole record.
/// Kept small and out of line so that its state stays in registers. Stops
/// at anything else (an unexpected tag, a list, a nested message) and
/// leaves it to the general loop. An error carries the field's index.
///
/// `UNSEEN`: the caller knows that no field from `start` on has been seen
/// in the open row, so each is a first occurrence (appended, no check), and
/// the decoded fields are marked seen in bulk when the run ends.
///
/// `LEAN`: the level's fast fields are all root-level doubles and `int64`s
/// ([`FastKind::WideF64`], [`FastKind::WideI64`]) and strings (typical
/// telemetry), so the loop needs only those three cases; fewer cases leave
/// more registers to them (measured: NEOWISE rows decode about a tenth
/// faster than with all of them).
///
/// `row` is the index of the level's open row.
#[inline(never)]
fn fast_run<'b, const UNSEEN: bool, const LEAN: bool>(
    (cols, fast, seen, stamp, mut buf, start, row): (
        &mut Columns,
        &[FastTag],
        &mut [u32],
        u32,
        &'b [u8],
        usize,
        usize,
    ),
) -> Result<FastRun<'b>, (usize, DecodeErrorKind)> {
    let mut newly_seen = 0u32;
    let mut expect = start;
    // With `UNSEEN`, the fields from `marked` to `expect` are decoded but
    // not yet marked seen.
    let mut marked = start;
    while let Some(f) = fast.get(expect) {
        if !f.matches(buf) {
            // An absent field (proto3 leaves out zeros, empty strings and
            // false) is skipped when the one after it is next.
            if fast.get(expect + 1).is_some_and(|next| next.matches(buf)) {
                if UNSEEN {
                    newly_seen += mark_seen(seen, marked..expect, stamp);
                    marked = expect + 1;
                }
                expect += 1;
                continue;
            }
            break;
        }
        if f.kind == FastKind::Generic {
            break;
        }
        let first = UNSEEN || {
            let Some(slot) = seen.get_mut(expect) else {
                break;
            };
            let first = *slot != stamp;
            *slot = stamp;
            newly_seen += u32::from(first);
            first
        };
        let mut rest = &buf[usize::from(f.len)..];
        let col = f.col as usize;
        let at = expect;
        let fail = move |kind| (at, kind);
        match f.kind {
            // Wide columns are overwritten in place: `first` does not matter.
            FastKind::WideF64 => {
                let bits = read_fixed64(&mut rest).map_err(fail)?;
                // Only the root has wide columns: `row` is below the stride.
                let stride = cols.wide.stride;
                let wide = cols.wide.row(row);
                store(wide, f.col, stride, bits).map_err(fail)?;
                // Telemetry rows hold long runs of doubles: the rest of a
                // run is decoded here, in a loop of its own, off the jump
                // table.
                while UNSEEN
                    && let Some(g) = fast.get(expect + 1)
                    && g.kind == FastKind::WideF64
                    && g.matches(rest)
                {
                    let next = expect + 1;
                    let mut after = &rest[usize::from(g.len)..];
                    let bits = read_fixed64(&mut after).map_err(|kind| (next, kind))?;
                    store(wide, g.col, stride, bits).map_err(|kind| (next, kind))?;
                    (rest, expect) = (after, next);
                }
            }
            FastKind::WideI64 => {
                let v = read_varint_inline(&mut rest).map_err(fail)?;
                cols.wide.set(f.col, row, v).map_err(fail)?;
            }
            FastKind::Utf8 => {
                let v = read_len(&mut rest).map_err(fail)?;
                if !v.is_ascii() && std::str::from_utf8(v).is_err() {
                    return Err(fail(DecodeErrorKind::InvalidUtf8));
                }
                cols.bytes[col].put(v, first).map_err(fail)?;
            }
            FastKind::F64
            | FastKind::I64
            | FastKind::I32
            | FastKind::F32
            | FastKind::Bool
            | FastKind::Binary
                if LEAN =>
            {
                // Not reached: `Node::lean` rules these kinds out (and the
                // field is already marked seen here).
                break;
            }
            FastKind::F64 => {
                let v = f64::from_bits(read_fixed64(&mut rest).map_err(fail)?);
                cols.f64s[col].put(v, first);
            }
            FastKind::I64 => {
                let v = read_varint_inline(&mut rest).map_err(fail)? as i64;
                cols.i64s[col].put(v, first);
            }
            FastKind::I32 => {
                let v = read_varint_inline(&mut rest).map_err(fail)? as i32;
                cols.i32s[col].put(v, first);
            }
            FastKind::F32 => {
                let v = f32::from_bits(read_fixed32(&mut rest).map_err(fail)?);
                cols.f32s[col].put(v, first);
            }
            FastKind::Bool => {
                let v = read_varint_inline(&mut rest).map_err(fail)? != 0;
                cols.bools[col].put(v, first);
            }
            FastKind::Binary => {
                let v = read_len(&mut rest).map_err(fail)?;
                cols.bytes[col].put(v, first).map_err(fail)?;
            }
            FastKind::Generic => break,
        }
        // Fast-path fields are singular: the next field by number follows.
        (buf, expect) = (rest, expect + 1);
    }
    if UNSEEN {
        newly_seen += mark_seen(seen, marked..expect, stamp);
    }
    Ok(FastRun {
        rest: buf,
        expect,
        newly_seen,
    })
}

/// Marks the fields at `positions` seen in the open row; returns how many.
fn mark_seen(seen: &mut [u32], positions: std::ops::Range<usize>, stamp: u32) -> u32 {
    match seen.get_mut(positions) {
        Some(slots) => {
            slots.fill(stamp);
            slots.len() as u32
        }
        None => 0,
    }
}

#[cold]
fn wrong_wire(path: PathId, expected: WireType, found: WireType) -> Fail {
    let kind = match found {
        WireType::StartGroup | WireType::EndGroup => DecodeErrorKind::Group,
        _ => DecodeErrorKind::WrongWireType { expected, found },
    };
    Fail { path, kind }
}
