//! Size budgets for input, checked before anything is allocated for it.
//!
//! A request's decoded size can be far larger than its bytes on the wire:
//! an Arrow `Null` column of two billion rows has no buffers at all, a
//! dictionary of one long string can be referenced by every row, a
//! compressed buffer declares its own uncompressed length, and every empty
//! protobuf record (one byte) becomes a full row of the table. Every path
//! from request bytes to rows therefore estimates what a request will cost
//! from what it *declares* (row counts, buffer lengths, record counts, the
//! table's column widths) and checks the estimate against [`Limits`]
//! before it decodes, casts or allocates: [`crate::ipc_stream`] and
//! [`crate::conform`] for Arrow, [`crate::json::decode_json`] for JSON, and
//! [`Limits::check_records`] before [`crate::protobuf::ProtoDecoder::decode`]
//! for protobuf. Estimates err on the high side.
//!
//! Over a limit, the error is [`Error::LimitExceeded`], which names the
//! limit's setting and the value found.

use arrow::datatypes::{DataType, Field, Schema};

use crate::{Error, Result};

/// What one request may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes one request may take once decoded into the table's
    /// schema (also the most bytes of a compressed request once
    /// decompressed). Setting `limits.max_request_bytes`.
    pub max_request_bytes: usize,
    /// Most rows (records) in one request. Setting
    /// `limits.max_request_rows`.
    pub max_request_rows: usize,
    /// Deepest nesting of a JSON record (objects and arrays). Setting
    /// `limits.max_json_depth`.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 << 20,
            max_request_rows: 1 << 20,
            max_json_depth: 64,
        }
    }
}

impl Limits {
    /// Fails unless `rows` is within `max_request_rows`.
    pub fn check_rows(&self, rows: u64) -> Result<()> {
        within(
            "rows in one request",
            rows,
            self.max_request_rows,
            "limits.max_request_rows",
        )
    }

    /// Fails unless `bytes` (an estimate of a request's decoded size) is
    /// within `max_request_bytes`.
    pub fn check_bytes(&self, bytes: u64) -> Result<()> {
        within(
            "bytes of one request once decoded",
            bytes,
            self.max_request_bytes,
            "limits.max_request_bytes",
        )
    }

    /// Checks a request of `records` protobuf or JSON records in `body_len`
    /// bytes for a table of `widths`, before decoding it.
    pub fn check_records(&self, records: usize, body_len: usize, widths: &RowWidths) -> Result<()> {
        self.check_rows(records as u64)?;
        self.check_bytes(widths.records_estimate(records, body_len))
    }
}

/// [`Error::LimitExceeded`] if `value` is over `limit`.
fn within(what: &'static str, value: u64, limit: usize, setting: &'static str) -> Result<()> {
    if value > limit as u64 {
        return Err(Error::LimitExceeded {
            what,
            value,
            limit: limit as u64,
            setting,
        });
    }
    Ok(())
}

/// What rows of a schema cost in Arrow memory, for estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowWidths {
    /// Bytes per row of the top-level columns: fixed-size values, offsets
    /// of variable-size ones and validity bits, with every non-repeated
    /// nested struct's children included.
    pub row_bytes: u64,
    /// The largest cost of one element of a list or map anywhere in the
    /// schema (0 if there are none). Each element takes at least one byte
    /// of input, so `input bytes x element_bytes` bounds what nested
    /// elements cost.
    pub element_bytes: u64,
}

impl RowWidths {
    /// The widths of `schema`.
    pub fn of(schema: &Schema) -> Self {
        let mut element_bytes = 0;
        let row_bytes = schema
            .fields()
            .iter()
            .map(|f| field_bytes(f, &mut element_bytes))
            .sum();
        Self {
            row_bytes,
            element_bytes,
        }
    }

    /// A high estimate of `records` records in `body_len` bytes once
    /// decoded: a full row per record, every input byte copied (strings),
    /// and every input byte a nested element at most.
    pub fn records_estimate(&self, records: usize, body_len: usize) -> u64 {
        (records as u64)
            .saturating_mul(self.row_bytes)
            .saturating_add((body_len as u64).saturating_mul(1 + self.element_bytes))
    }
}

/// Bytes per value of a column of `data_type` that are not variable-size
/// data: fixed-size values, offsets or views, and a validity bit (rounded
/// up to a byte). Nested types count their children per value.
pub(crate) fn value_bytes(data_type: &DataType) -> u64 {
    let mut ignored = 0;
    type_bytes(data_type, &mut ignored)
}

fn field_bytes(field: &Field, element_bytes: &mut u64) -> u64 {
    type_bytes(field.data_type(), element_bytes)
}

fn type_bytes(data_type: &DataType, element_bytes: &mut u64) -> u64 {
    use DataType::*;
    let validity = 1;
    let own = match data_type {
        Null => 0,
        Boolean => 1,
        Utf8 | Binary => 4,
        LargeUtf8 | LargeBinary => 8,
        Utf8View | BinaryView => 16,
        FixedSizeBinary(n) => u64::try_from(*n).unwrap_or(0),
        Struct(fields) => fields.iter().map(|f| field_bytes(f, element_bytes)).sum(),
        List(child) | ListView(child) | Map(child, _) => {
            let element = field_bytes(child, element_bytes);
            *element_bytes = (*element_bytes).max(element);
            4
        }
        LargeList(child) | LargeListView(child) => {
            let element = field_bytes(child, element_bytes);
            *element_bytes = (*element_bytes).max(element);
            8
        }
        FixedSizeList(child, n) => {
            field_bytes(child, element_bytes).saturating_mul(u64::try_from(*n).unwrap_or(0))
        }
        Dictionary(key, value) => type_bytes(key, element_bytes) + type_bytes(value, element_bytes),
        RunEndEncoded(ends, values) => {
            field_bytes(ends, element_bytes) + field_bytes(values, element_bytes)
        }
        Union(fields, _) => {
            1 + 4
                + fields
                    .iter()
                    .map(|(_, f)| field_bytes(f, element_bytes))
                    .sum::<u64>()
        }
        other => other.primitive_width().map_or(16, |w| w as u64),
    };
    own + validity
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn widths_count_rows_and_nested_elements() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("site", DataType::Utf8, true),
            Field::new(
                "meta",
                DataType::Struct(vec![Field::new("x", DataType::Float64, true)].into()),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new(
                    "item",
                    DataType::Struct(
                        vec![
                            Field::new("a", DataType::Int64, true),
                            Field::new("b", DataType::Int32, true),
                        ]
                        .into(),
                    ),
                    true,
                ))),
                true,
            ),
        ]);
        let widths = RowWidths::of(&schema);
        // id 8+1, site 4+1, meta (x 8+1)+1, tags offsets 4+1.
        assert_eq!(widths.row_bytes, 9 + 5 + 10 + 5);
        // One tag: a 9 + b 5 + its own validity 1.
        assert_eq!(widths.element_bytes, 15);
        assert_eq!(widths.records_estimate(10, 100), 290 + 100 * 16);
    }

    #[test]
    fn limits_name_their_setting_and_value() {
        let limits = Limits {
            max_request_bytes: 1000,
            max_request_rows: 10,
            max_json_depth: 4,
        };
        assert!(limits.check_rows(10).is_ok());
        let err = limits.check_rows(11).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too large: 11 rows in one request, over the limit of 10 (limits.max_request_rows)"
        );
        assert!(err.is_limit());
        let widths = RowWidths {
            row_bytes: 100,
            element_bytes: 0,
        };
        assert!(limits.check_records(9, 100, &widths).is_ok());
        let err = limits.check_records(10, 100, &widths).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_request_bytes"),
            "{err}"
        );
    }
}
