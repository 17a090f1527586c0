//! The life of a row: open, close (absent fields, list and map ends),
//! null rows, and dropping a partly decoded value (oneof switching).
//!
//! Invariant: between rows, every column of a struct level holds exactly
//! `rows` values, and every list or map column `rows + 1` offsets. While a
//! row is open, a singular column holds one more value if its field was seen,
//! and list elements of the open row sit past the last offset. (The root's
//! [`Shape::Wide`] columns are sized for every record up front; their value
//! for row `r` is at `r`, and their nulls follow the rule above.)

use std::cmp::Ordering;

use super::decoder::{Decoding, Fail};
use super::error::DecodeErrorKind;
use super::plan::{Absent, Card, Node, NodeId, Shape};

impl Decoding<'_> {
    /// Opens a new row of `node`: no field seen yet.
    #[inline]
    pub(crate) fn open_row(&mut self, node: NodeId) {
        let st = &mut self.nodes[node as usize];
        if st.stamp == u32::MAX {
            st.seen.fill(0);
            st.oneof.fill((0, 0));
            st.stamp = 0;
        }
        st.stamp += 1;
        st.nseen = 0;
    }

    /// Closes the open row of `node`: absent singular fields get their
    /// default or null (or fail), lists and maps end their row, and open
    /// child rows are closed.
    pub(crate) fn close_row(&mut self, node: NodeId) -> Result<(), Fail> {
        let plan = self.plan;
        let n = &plan.nodes[node as usize];
        let st = &mut self.nodes[node as usize];
        if n.close_always || st.nseen != n.n_singular {
            // The stamps leave `self` while the fields are visited (child
            // levels have state of their own).
            let stamp = st.stamp;
            let seen = std::mem::take(&mut st.seen);
            let closed = self.close_fields(n, &seen, stamp);
            self.nodes[node as usize].seen = seen;
            closed?;
        }
        self.nodes[node as usize].rows += 1;
        Ok(())
    }

    /// The field work of [`close_row`](Self::close_row).
    fn close_fields(&mut self, n: &Node, seen: &[u32], stamp: u32) -> Result<(), Fail> {
        for (f, &seen) in n.fields.iter().zip(seen) {
            let at = |kind| Fail { path: f.path, kind };
            match f.card {
                Card::Singular if seen == stamp => {
                    if let Shape::Struct(child) = f.shape {
                        self.close_row(child)?;
                    }
                }
                Card::Singular => match f.absent {
                    Absent::Default => self.push_default(&f.op, f.path)?,
                    Absent::Null => self.push_absent(&f.shape, true),
                    Absent::Required => return Err(at(DecodeErrorKind::MissingRequired)),
                    Absent::NonNullable => return Err(at(DecodeErrorKind::MissingNonNullable)),
                },
                Card::Repeated { list, .. } => {
                    let Shape::List { elem, .. } = &f.shape else {
                        continue;
                    };
                    let end = self.shape_len(elem);
                    self.cols.lists[list as usize].push(end).map_err(at)?;
                }
                Card::Map { map, entry } => {
                    let end = self.nodes[entry as usize].rows;
                    self.dedupe_map(map, entry, end);
                    self.cols.maps[map as usize].offsets.push(end).map_err(at)?;
                }
            }
        }
        Ok(())
    }

    /// Appends one absent value of `shape`: null where the column is
    /// `nullable`, else a default (used under a null parent, where Arrow
    /// ignores it). Nested structs get a row of absent values.
    pub(crate) fn push_absent(&mut self, shape: &Shape, nullable: bool) {
        let cols = &mut self.cols;
        match *shape {
            Shape::I32(c) => cols.i32s[c as usize].push_absent(nullable),
            Shape::I64(c) => cols.i64s[c as usize].push_absent(nullable),
            Shape::U32(c) => cols.u32s[c as usize].push_absent(nullable),
            Shape::U64(c) => cols.u64s[c as usize].push_absent(nullable),
            Shape::F32(c) => cols.f32s[c as usize].push_absent(nullable),
            Shape::F64(c) => cols.f64s[c as usize].push_absent(nullable),
            // The value is zero already (see `Wide`).
            Shape::Wide(slot) if nullable => {
                cols.wide.nulls[slot as usize].push(self.nodes[0].rows);
            }
            Shape::Wide(_) => {}
            Shape::Bool(c) => cols.bools[c as usize].push_absent(nullable),
            Shape::Bytes(c) => cols.bytes[c as usize].push_absent(nullable),
            Shape::List { list, .. } => {
                let offsets = &mut cols.lists[list as usize];
                offsets
                    .offsets
                    .push(offsets.offsets.last().copied().unwrap_or(0));
            }
            Shape::Map { map, .. } => {
                let offsets = &mut cols.maps[map as usize].offsets;
                offsets
                    .offsets
                    .push(offsets.offsets.last().copied().unwrap_or(0));
            }
            Shape::Struct(child) => {
                let plan = self.plan;
                let n = &plan.nodes[child as usize];
                for c in &n.children {
                    self.push_absent(&c.shape, c.field.is_nullable());
                }
                let rows = &mut self.nodes[child as usize].rows;
                if let (Some(s), true) = (n.struct_col, nullable) {
                    self.cols.structs[s as usize].push(*rows);
                }
                *rows += 1;
            }
            Shape::Null => {}
        }
    }

    /// Drops the value of singular field `index` from the open row of
    /// `node` (or its partly decoded child row). Used when another member of
    /// its oneof is set; the caller marks the field unseen.
    pub(crate) fn clear_field(&mut self, node: NodeId, index: usize) {
        let plan = self.plan;
        let rows = self.nodes[node as usize].rows;
        self.truncate_shape(&plan.nodes[node as usize].fields[index].shape, rows);
    }

    /// Truncates the column(s) of `shape` to `len` rows.
    fn truncate_shape(&mut self, shape: &Shape, len: usize) {
        let cols = &mut self.cols;
        match *shape {
            Shape::I32(c) => cols.i32s[c as usize].truncate(len),
            Shape::I64(c) => cols.i64s[c as usize].truncate(len),
            Shape::U32(c) => cols.u32s[c as usize].truncate(len),
            Shape::U64(c) => cols.u64s[c as usize].truncate(len),
            Shape::F32(c) => cols.f32s[c as usize].truncate(len),
            Shape::F64(c) => cols.f64s[c as usize].truncate(len),
            Shape::Wide(slot) => cols.wide.truncate(slot, len),
            Shape::Bool(c) => cols.bools[c as usize].truncate(len),
            Shape::Bytes(c) => cols.bytes[c as usize].truncate(len),
            Shape::List { list, ref elem } => {
                let end = cols.lists[list as usize].truncate(len);
                self.truncate_shape(elem, end);
            }
            Shape::Map { map, entry } => {
                let m = &mut cols.maps[map as usize];
                let end = m.offsets.truncate(len);
                m.dropped.retain(|&d| (d as usize) < end);
                self.truncate_node(entry, end);
            }
            Shape::Struct(child) => self.truncate_node(child, len),
            Shape::Null => {}
        }
    }

    /// Truncates every column of struct level `node` to `rows` rows.
    fn truncate_node(&mut self, node: NodeId, rows: usize) {
        let plan = self.plan;
        let n = &plan.nodes[node as usize];
        for c in &n.children {
            self.truncate_shape(&c.shape, rows);
        }
        if let Some(s) = n.struct_col {
            self.cols.structs[s as usize].truncate(rows);
        }
        self.nodes[node as usize].rows = rows;
    }

    /// The number of values in the column(s) of `shape`.
    fn shape_len(&self, shape: &Shape) -> usize {
        let cols = &self.cols;
        match *shape {
            Shape::I32(c) => cols.i32s[c as usize].len(),
            Shape::I64(c) => cols.i64s[c as usize].len(),
            Shape::U32(c) => cols.u32s[c as usize].len(),
            Shape::U64(c) => cols.u64s[c as usize].len(),
            Shape::F32(c) => cols.f32s[c as usize].len(),
            Shape::F64(c) => cols.f64s[c as usize].len(),
            // Root columns: one value per closed row.
            Shape::Wide(_) => self.nodes[0].rows,
            Shape::Bool(c) => cols.bools[c as usize].len(),
            Shape::Bytes(c) => cols.bytes[c as usize].len(),
            Shape::List { list, .. } => cols.lists[list as usize].offsets.len() - 1,
            Shape::Map { map, .. } => cols.maps[map as usize].offsets.offsets.len() - 1,
            Shape::Struct(child) => self.nodes[child as usize].rows,
            Shape::Null => 0,
        }
    }

    /// Marks, within the map row ending at entry `end`, every entry whose
    /// key occurs again later in the row: protobuf keeps the last value for
    /// a key, so the earlier ones are dropped when the array is built.
    fn dedupe_map(&mut self, map: u32, entry: NodeId, end: usize) {
        let start = self.cols.maps[map as usize].offsets.last();
        if end - start < 2 {
            return;
        }
        let key = &self.plan.nodes[entry as usize].children[0].shape;
        let mut order = std::mem::take(&mut self.scratch);
        order.clear();
        order.extend(start as u32..end as u32);
        // Stable sort by key: equal keys stay in wire order.
        order.sort_by(|&a, &b| self.compare_keys(key, a as usize, b as usize));
        let mut drops = Vec::new();
        for pair in order.windows(2) {
            if self.compare_keys(key, pair[0] as usize, pair[1] as usize) == Ordering::Equal {
                drops.push(pair[0]);
            }
        }
        if !drops.is_empty() {
            drops.sort_unstable();
            self.cols.maps[map as usize].dropped.extend(drops);
        }
        self.scratch = order;
    }

    fn compare_keys(&self, key: &Shape, a: usize, b: usize) -> Ordering {
        let cols = &self.cols;
        match *key {
            Shape::I32(c) => cols.i32s[c as usize].values[a].cmp(&cols.i32s[c as usize].values[b]),
            Shape::I64(c) => cols.i64s[c as usize].values[a].cmp(&cols.i64s[c as usize].values[b]),
            Shape::U32(c) => cols.u32s[c as usize].values[a].cmp(&cols.u32s[c as usize].values[b]),
            Shape::U64(c) => cols.u64s[c as usize].values[a].cmp(&cols.u64s[c as usize].values[b]),
            Shape::Bool(c) => {
                let v = &cols.bools[c as usize].values;
                v.get_bit(a).cmp(&v.get_bit(b))
            }
            Shape::Bytes(c) => {
                let col = &cols.bytes[c as usize];
                let value =
                    |i: usize| &col.data[col.offsets[i] as usize..col.offsets[i + 1] as usize];
                value(a).cmp(value(b))
            }
            // Map keys are scalars; other shapes never occur.
            _ => Ordering::Less,
        }
    }
}
