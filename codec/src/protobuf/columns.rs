//! Column builders: the buffers that become Arrow arrays.
//!
//! Each builder appends one value per row and can overwrite or drop its
//! last value, which is how the decoder implements "last value wins" for a
//! singular field that occurs twice in one record (and oneof switching)
//! without decoding a record into an intermediate object first. Columns of
//! one kind live in one arena `Vec` ([`Columns`]), indexed by the slot
//! numbers the plan assigned. The root level's 64-bit columns are the
//! exception ([`Wide`]): one buffer, written by row index.

use arrow::array::BooleanBufferBuilder;
use arrow::buffer::{Buffer, NullBuffer};

use super::error::DecodeErrorKind;
use super::plan::Counts;

/// The null rows of a column, as a list of positions: appending a valid
/// value costs nothing, and nulls are rare in ingest data.
#[derive(Debug, Default)]
pub(crate) struct Nulls {
    /// Rows that are null, ascending.
    positions: Vec<usize>,
}

impl Nulls {
    /// Marks row `row` (the one being appended) null.
    pub fn push(&mut self, row: usize) {
        self.positions.push(row);
    }

    /// Forgets nulls at rows `len` and above.
    pub fn truncate(&mut self, len: usize) {
        while self.positions.last().is_some_and(|&p| p >= len) {
            self.positions.pop();
        }
    }

    /// The validity buffer of a column of `len` rows (none if no nulls).
    pub fn finish(&mut self, len: usize) -> Option<NullBuffer> {
        if self.positions.is_empty() {
            return None;
        }
        let mut valid = BooleanBufferBuilder::new(len);
        valid.append_n(len, true);
        for &p in &self.positions {
            valid.set_bit(p, false);
        }
        self.positions.clear();
        Some(NullBuffer::new(valid.finish()))
    }
}

/// A fixed-width column: values plus validity.
#[derive(Debug)]
pub(crate) struct Prim<T> {
    pub values: Vec<T>,
    pub nulls: Nulls,
}

impl<T: Copy + Default> Prim<T> {
    fn with_capacity(rows: usize) -> Self {
        Prim {
            values: Vec::with_capacity(rows),
            nulls: Nulls::default(),
        }
    }

    /// Appends `v` (`first`), or overwrites the last value with it.
    #[inline(always)]
    pub fn put(&mut self, v: T, first: bool) {
        if first {
            self.values.push(v);
        } else if let Some(last) = self.values.last_mut() {
            *last = v;
        }
    }

    /// Appends a null (`nullable`) or a default value.
    pub fn push_absent(&mut self, nullable: bool) {
        if nullable {
            self.nulls.push(self.values.len());
        }
        self.values.push(T::default());
    }

    pub fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.nulls.truncate(len);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
}

/// The root level's 64-bit columns ([`super::plan::Shape::Wide`]) in one
/// buffer, column after column: column `slot` holds its value for row `r`
/// at `slot * stride + r`. The root has exactly one row per record, so
/// `stride`, the number of records, is known before decoding starts, and
/// the decode loop stores each value with one write: no per-column length
/// to load, check and update. The arrays are slices of the one buffer.
#[derive(Debug)]
pub(crate) struct Wide {
    /// Starts zeroed, so an absent field's value (null or the proto3
    /// default) is already in place.
    pub values: Vec<u64>,
    pub stride: usize,
    pub nulls: Vec<Nulls>,
    /// `values`, moved into Arrow once the batch is built.
    pub shared: Option<Buffer>,
}

impl Wide {
    fn new(slots: u32, stride: usize) -> Self {
        Wide {
            values: vec![0; (slots as usize).saturating_mul(stride)],
            stride,
            nulls: (0..slots).map(|_| Nulls::default()).collect(),
            shared: None,
        }
    }

    /// The values from row `row` of the first column on: column `slot`'s
    /// value for that row is at `slot * stride`. Empty past the last row.
    #[inline(always)]
    pub fn row(&mut self, row: usize) -> &mut [u64] {
        match self.values.get_mut(row..) {
            Some(values) if row < self.stride => values,
            _ => &mut [],
        }
    }

    /// Drops column `slot`'s values from row `len` on (back to zero).
    pub fn truncate(&mut self, slot: u32, len: usize) {
        let start = (slot as usize).saturating_mul(self.stride);
        let end = start.saturating_add(self.stride);
        if let Some(dropped) = self.values.get_mut(start.saturating_add(len)..end) {
            dropped.fill(0);
        }
        self.nulls[slot as usize].truncate(len);
    }

    /// Stores the value of column `slot` for row `row`.
    #[inline(always)]
    pub fn set(&mut self, slot: u32, row: usize, bits: u64) -> Result<(), DecodeErrorKind> {
        let stride = self.stride;
        store(self.row(row), slot, stride, bits)
    }
}

/// Stores a value into a row of a [`Wide`] (from [`Wide::row`]). Rows past
/// the number of records announced are refused, never written elsewhere.
#[inline(always)]
pub(crate) fn store(
    row: &mut [u64],
    slot: u32,
    stride: usize,
    bits: u64,
) -> Result<(), DecodeErrorKind> {
    match row.get_mut(slot as usize * stride) {
        Some(value) => {
            *value = bits;
            Ok(())
        }
        None => Err(DecodeErrorKind::BatchTooLarge),
    }
}

/// A boolean column.
#[derive(Debug)]
pub(crate) struct Bools {
    pub values: BooleanBufferBuilder,
    pub nulls: Nulls,
}

impl Bools {
    /// Appends `v` (`first`), or overwrites the last value with it.
    #[inline(always)]
    pub fn put(&mut self, v: bool, first: bool) {
        if first {
            self.values.append(v);
        } else if let Some(last) = self.values.len().checked_sub(1) {
            self.values.set_bit(last, v);
        }
    }

    pub fn push_absent(&mut self, nullable: bool) {
        if nullable {
            self.nulls.push(self.values.len());
        }
        self.values.append(false);
    }

    pub fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.nulls.truncate(len);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
}

/// A `Utf8` or `Binary` column: 32-bit offsets into one value buffer.
/// Values are copied once, from the record into `data`.
#[derive(Debug)]
pub(crate) struct Bytes {
    pub offsets: Vec<i32>,
    pub data: Vec<u8>,
    pub nulls: Nulls,
}

impl Bytes {
    fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Bytes {
            offsets,
            data: Vec::new(),
            nulls: Nulls::default(),
        }
    }

    /// Appends `v` (`first`), or replaces the last value with it.
    #[inline(always)]
    pub fn put(&mut self, v: &[u8], first: bool) -> Result<(), DecodeErrorKind> {
        if !first && self.offsets.len() > 1 {
            self.offsets.pop();
            let end = self.offsets.last().copied().unwrap_or(0);
            self.data.truncate(end as usize);
        }
        self.data.extend_from_slice(v);
        let end = i32::try_from(self.data.len()).map_err(|_| DecodeErrorKind::BatchTooLarge)?;
        self.offsets.push(end);
        Ok(())
    }

    pub fn push_absent(&mut self, nullable: bool) {
        if nullable {
            self.nulls.push(self.len());
        }
        self.offsets.push(self.offsets.last().copied().unwrap_or(0));
    }

    pub fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        let end = self.offsets.last().copied().unwrap_or(0);
        self.data.truncate(end as usize);
        self.nulls.truncate(len);
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// Offsets of a `List` column (lists themselves are never null: an absent
/// repeated field is an empty list).
#[derive(Debug)]
pub(crate) struct Offsets {
    pub offsets: Vec<i32>,
}

impl Offsets {
    fn new(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Offsets { offsets }
    }

    /// Ends a row whose elements end at `end`.
    pub fn push(&mut self, end: usize) -> Result<(), DecodeErrorKind> {
        self.offsets
            .push(i32::try_from(end).map_err(|_| DecodeErrorKind::BatchTooLarge)?);
        Ok(())
    }

    /// Where the elements of the open (not yet ended) row start.
    pub fn last(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0) as usize
    }

    /// Keeps `len` rows; returns where their elements end.
    pub fn truncate(&mut self, len: usize) -> usize {
        self.offsets.truncate(len + 1);
        self.last()
    }
}

/// A `Map` column: offsets, plus the entries dropped because a later entry
/// of the same map had the same key (protobuf keeps the last).
#[derive(Debug)]
pub(crate) struct MapCol {
    pub offsets: Offsets,
    /// Entry indices to drop, ascending.
    pub dropped: Vec<u32>,
}

/// All builders of one decode call, in typed arenas.
#[derive(Debug)]
pub(crate) struct Columns {
    pub i32s: Vec<Prim<i32>>,
    pub i64s: Vec<Prim<i64>>,
    pub u32s: Vec<Prim<u32>>,
    pub u64s: Vec<Prim<u64>>,
    pub f32s: Vec<Prim<f32>>,
    pub f64s: Vec<Prim<f64>>,
    pub wide: Wide,
    pub bools: Vec<Bools>,
    pub bytes: Vec<Bytes>,
    /// Validity of struct columns (their length is the node's row count).
    pub structs: Vec<Nulls>,
    pub lists: Vec<Offsets>,
    pub maps: Vec<MapCol>,
    /// `(seconds, nanos)` of the timestamp being decoded, per timestamp
    /// column, so that a second occurrence can merge into the first.
    pub timestamps: Vec<(i64, i32)>,
}

impl Columns {
    /// Empty builders for the plan's columns, sized for `rows` records
    /// (exactly `rows` for the root's [`Wide`] columns).
    pub fn new(counts: &Counts, rows: usize) -> Self {
        fn many<T>(n: u32, make: impl Fn() -> T) -> Vec<T> {
            (0..n).map(|_| make()).collect()
        }
        Columns {
            i32s: many(counts.i32s, || Prim::with_capacity(rows)),
            i64s: many(counts.i64s, || Prim::with_capacity(rows)),
            u32s: many(counts.u32s, || Prim::with_capacity(rows)),
            u64s: many(counts.u64s, || Prim::with_capacity(rows)),
            f32s: many(counts.f32s, || Prim::with_capacity(rows)),
            f64s: many(counts.f64s, || Prim::with_capacity(rows)),
            wide: Wide::new(counts.wide, rows),
            bools: many(counts.bools, || Bools {
                values: BooleanBufferBuilder::new(rows),
                nulls: Nulls::default(),
            }),
            bytes: many(counts.bytes, || Bytes::with_capacity(rows)),
            structs: many(counts.structs, Nulls::default),
            lists: many(counts.lists, || Offsets::new(rows)),
            maps: many(counts.maps, || MapCol {
                offsets: Offsets::new(rows),
                dropped: Vec::new(),
            }),
            timestamps: vec![(0, 0); counts.timestamps as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_and_truncate() {
        let mut p = Prim::<i64>::with_capacity(4);
        p.put(1, true);
        p.put(2, false);
        p.push_absent(true);
        assert_eq!(p.values, [2, 0]);
        let nulls = Prim {
            values: vec![0; 2],
            nulls: Nulls { positions: vec![1] },
        }
        .nulls
        .finish(2)
        .unwrap();
        assert_eq!((nulls.is_valid(0), nulls.is_null(1)), (true, true));
        p.truncate(1);
        assert_eq!(p.len(), 1);
        assert!(p.nulls.finish(1).is_none());

        let mut b = Bytes::with_capacity(4);
        b.put(b"abc", true).unwrap();
        b.put(b"de", true).unwrap();
        b.put(b"xyz!", false).unwrap();
        assert_eq!(b.offsets, [0, 3, 7]);
        assert_eq!(b.data, b"abcxyz!");
        b.push_absent(false);
        b.truncate(1);
        assert_eq!(
            (b.offsets.as_slice(), b.data.as_slice()),
            (&[0, 3][..], &b"abc"[..])
        );

        // Two columns of three rows: column 1, row 2 sits at 1 * 3 + 2.
        let mut w = Wide::new(2, 3);
        w.set(1, 2, 7).unwrap();
        w.set(1, 2, 8).unwrap();
        w.set(0, 0, 5).unwrap();
        assert_eq!(w.values, [5, 0, 0, 0, 0, 8]);
        assert_eq!(w.set(0, 3, 1), Err(DecodeErrorKind::BatchTooLarge));
        assert_eq!(w.set(2, 0, 1), Err(DecodeErrorKind::BatchTooLarge));
        w.nulls[1].push(1);
        w.truncate(1, 1);
        assert_eq!(w.values, [5, 0, 0, 0, 0, 0]);
        assert!(w.nulls[1].finish(3).is_none());

        let mut bools = Bools {
            values: BooleanBufferBuilder::new(2),
            nulls: Nulls::default(),
        };
        bools.put(false, true);
        bools.put(true, false);
        assert!(bools.values.get_bit(0));
    }
}
