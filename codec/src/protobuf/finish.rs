//! Turning the builders into Arrow arrays of the table's types.
//!
//! Buffers move into Arrow without copying (`Vec` -> `Buffer`). Arrays are
//! built with Arrow's checked constructors (the crate forbids `unsafe`), so
//! string columns are UTF-8 checked a second time here, over the whole value
//! buffer at once; that is cheap next to decoding and never fails for
//! buffers the decoder filled.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, ListArray, MapArray, PrimitiveArray, StringArray, StructArray,
    UInt32Array, UInt64Array, new_null_array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::filter;
use arrow::datatypes::{
    ArrowNativeType, ArrowPrimitiveType, ArrowTimestampType, DataType, Field, Fields, SchemaRef,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::columns::{MapCol, Prim};
use super::decoder::Decoding;
use super::plan::{NodeId, Shape};
use crate::error::{Error, Result};

impl Decoding<'_> {
    /// Builds the batch from everything decoded, in the table's schema.
    pub fn finish(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self.nodes[0].rows;
        // Root columns in the shared buffer hold `stride` rows at most.
        if rows > self.cols.wide.stride && !self.cols.wide.nulls.is_empty() {
            return Err(invariant("more records than the batch was sized for"));
        }
        let arrays = self.node_arrays(0, rows)?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            arrays,
            &options,
        )?)
    }

    fn node_arrays(&mut self, node: NodeId, rows: usize) -> Result<Vec<ArrayRef>> {
        let plan = self.plan;
        plan.nodes[node as usize]
            .children
            .iter()
            .map(|c| self.array(&c.shape, &c.field, rows))
            .collect()
    }

    /// The array of one column; `len` is its row count.
    fn array(&mut self, shape: &Shape, field: &Field, len: usize) -> Result<ArrayRef> {
        let dt = field.data_type();
        let cols = &mut self.cols;
        Ok(match *shape {
            Shape::I32(c) => {
                let p = &mut cols.i32s[c as usize];
                match dt {
                    DataType::Date32 => {
                        Arc::new(prim::<arrow::datatypes::Date32Type>(p)?) as ArrayRef
                    }
                    DataType::Int16 => {
                        let values: Vec<i16> = p.values.iter().map(|&v| v as i16).collect();
                        Arc::new(Int16Array::try_new(values.into(), p.nulls.finish(len))?)
                    }
                    DataType::Int8 => {
                        let values: Vec<i8> = p.values.iter().map(|&v| v as i8).collect();
                        Arc::new(Int8Array::try_new(values.into(), p.nulls.finish(len))?)
                    }
                    _ => Arc::new(Int32Array::try_new(
                        take(&mut p.values),
                        p.nulls.finish(len),
                    )?),
                }
            }
            Shape::I64(c) => {
                let p = &mut cols.i64s[c as usize];
                int64_array(dt, take(&mut p.values), p.nulls.finish(len))?
            }
            Shape::U32(c) => {
                let p = &mut cols.u32s[c as usize];
                Arc::new(UInt32Array::try_new(
                    take(&mut p.values),
                    p.nulls.finish(len),
                )?)
            }
            Shape::U64(c) => {
                let p = &mut cols.u64s[c as usize];
                Arc::new(UInt64Array::try_new(
                    take(&mut p.values),
                    p.nulls.finish(len),
                )?)
            }
            Shape::F32(c) => {
                let p = &mut cols.f32s[c as usize];
                Arc::new(Float32Array::try_new(
                    take(&mut p.values),
                    p.nulls.finish(len),
                )?)
            }
            Shape::F64(c) => {
                let p = &mut cols.f64s[c as usize];
                Arc::new(Float64Array::try_new(
                    take(&mut p.values),
                    p.nulls.finish(len),
                )?)
            }
            Shape::Wide(slot) => {
                let nulls = cols.wide.nulls[slot as usize].finish(len);
                match dt {
                    DataType::Float64 => {
                        Arc::new(Float64Array::try_new(self.wide_values(slot, len), nulls)?)
                            as ArrayRef
                    }
                    _ => int64_array(dt, self.wide_values(slot, len), nulls)?,
                }
            }
            Shape::Bool(c) => {
                let b = &mut cols.bools[c as usize];
                Arc::new(BooleanArray::new(b.values.finish(), b.nulls.finish(len)))
            }
            Shape::Bytes(c) => {
                let b = &mut cols.bytes[c as usize];
                let offsets = OffsetBuffer::new(take(&mut b.offsets));
                let data = std::mem::take(&mut b.data).into();
                match dt {
                    DataType::Binary => {
                        Arc::new(BinaryArray::try_new(offsets, data, b.nulls.finish(len))?)
                            as ArrayRef
                    }
                    _ => Arc::new(StringArray::try_new(offsets, data, b.nulls.finish(len))?),
                }
            }
            Shape::Struct(child) => {
                let DataType::Struct(fields) = dt else {
                    return Err(invariant("struct shape without a struct type"));
                };
                Arc::new(self.struct_array(child, fields, len)?)
            }
            Shape::List { list, ref elem } => {
                let DataType::List(elem_field) = dt else {
                    return Err(invariant("list shape without a list type"));
                };
                let offsets = OffsetBuffer::new(take(&mut cols.lists[list as usize].offsets));
                let n = offsets.last().copied().unwrap_or(0) as usize;
                let values = self.array(elem, elem_field, n)?;
                Arc::new(ListArray::try_new(
                    Arc::clone(elem_field),
                    offsets,
                    values,
                    None,
                )?)
            }
            Shape::Map { map, entry } => {
                let DataType::Map(entries_field, sorted) = dt else {
                    return Err(invariant("map shape without a map type"));
                };
                let DataType::Struct(entry_fields) = entries_field.data_type() else {
                    return Err(invariant("map entries are not a struct"));
                };
                let m = std::mem::replace(
                    &mut cols.maps[map as usize],
                    MapCol {
                        offsets: super::columns::Offsets { offsets: vec![0] },
                        dropped: Vec::new(),
                    },
                );
                let n = m.offsets.last();
                let entries = self.struct_array(entry, entry_fields, n)?;
                let (offsets, entries) = drop_entries(m, entries)?;
                Arc::new(MapArray::try_new(
                    Arc::clone(entries_field),
                    offsets,
                    entries,
                    None,
                    *sorted,
                )?)
            }
            Shape::Null => new_null_array(dt, len),
        })
    }

    /// The first `len` values of [`Shape::Wide`] column `slot`: a slice of
    /// the buffer all of them share (moved into Arrow on first use).
    fn wide_values<T: ArrowNativeType>(&mut self, slot: u32, len: usize) -> ScalarBuffer<T> {
        let wide = &mut self.cols.wide;
        let shared = wide
            .shared
            .get_or_insert_with(|| Buffer::from_vec(std::mem::take(&mut wide.values)));
        ScalarBuffer::new(shared.clone(), slot as usize * wide.stride, len)
    }

    fn struct_array(&mut self, node: NodeId, fields: &Fields, len: usize) -> Result<StructArray> {
        let arrays = self.node_arrays(node, len)?;
        let nulls = match self.plan.nodes[node as usize].struct_col {
            Some(s) => self.cols.structs[s as usize].finish(len),
            None => None,
        };
        Ok(StructArray::try_new_with_length(
            fields.clone(),
            arrays,
            nulls,
            len,
        )?)
    }
}

/// Removes map entries shadowed by a later entry with the same key and
/// shifts the offsets to match.
fn drop_entries(m: MapCol, entries: StructArray) -> Result<(OffsetBuffer<i32>, StructArray)> {
    let MapCol { offsets, dropped } = m;
    if dropped.is_empty() {
        return Ok((OffsetBuffer::new(offsets.offsets.into()), entries));
    }
    let mut keep = vec![true; entries.len()];
    for &d in &dropped {
        if let Some(k) = keep.get_mut(d as usize) {
            *k = false;
        }
    }
    let mut shifted = Vec::with_capacity(offsets.offsets.len());
    let mut removed = 0usize;
    for &o in &offsets.offsets {
        while removed < dropped.len() && (dropped[removed] as i32) < o {
            removed += 1;
        }
        shifted.push(o - removed as i32);
    }
    let kept = filter(&entries, &BooleanArray::from(keep))?;
    let kept = kept
        .as_any()
        .downcast_ref::<StructArray>()
        .cloned()
        .ok_or_else(|| invariant("filtered map entries are not a struct"))?;
    Ok((OffsetBuffer::new(shifted.into()), kept))
}

/// An `Int64` or `Timestamp` array of `values`.
fn int64_array(
    dt: &DataType,
    values: ScalarBuffer<i64>,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef, ArrowError> {
    fn timestamps<T: ArrowTimestampType>(
        values: ScalarBuffer<i64>,
        nulls: Option<NullBuffer>,
        tz: &Option<Arc<str>>,
    ) -> Result<ArrayRef, ArrowError> {
        Ok(Arc::new(
            PrimitiveArray::<T>::try_new(values, nulls)?.with_timezone_opt(tz.clone()),
        ))
    }
    match dt {
        DataType::Timestamp(TimeUnit::Second, tz) => {
            timestamps::<TimestampSecondType>(values, nulls, tz)
        }
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            timestamps::<TimestampMillisecondType>(values, nulls, tz)
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            timestamps::<TimestampMicrosecondType>(values, nulls, tz)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            timestamps::<TimestampNanosecondType>(values, nulls, tz)
        }
        _ => Ok(Arc::new(Int64Array::try_new(values, nulls)?)),
    }
}

fn prim<T: ArrowPrimitiveType>(p: &mut Prim<T::Native>) -> Result<PrimitiveArray<T>, ArrowError> {
    let len = p.values.len();
    PrimitiveArray::<T>::try_new(take(&mut p.values), p.nulls.finish(len))
}

fn take<T: ArrowNativeType>(v: &mut Vec<T>) -> ScalarBuffer<T> {
    ScalarBuffer::from(std::mem::take(v))
}

fn invariant(what: &str) -> Error {
    ArrowError::InvalidArgumentError(format!("protobuf decoder: {what}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadowed_map_entries_are_dropped() {
        let keys = Arc::new(Int32Array::from(vec![1, 2, 1, 5])) as ArrayRef;
        let fields = Fields::from(vec![Field::new("key", DataType::Int32, false)]);
        let entries = StructArray::try_new(fields, vec![keys], None).unwrap();
        let m = MapCol {
            offsets: super::super::columns::Offsets {
                offsets: vec![0, 3, 4],
            },
            dropped: vec![0],
        };
        let (offsets, kept) = drop_entries(m, entries).unwrap();
        assert_eq!(offsets.as_ref(), &[0, 2, 3]);
        assert_eq!(kept.len(), 3);
    }
}
