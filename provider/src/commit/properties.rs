//! How a commit's Parquet is written: the codec, which columns get a
//! dictionary, and how floating-point columns are laid out
//! ([`FloatColumns`]).
//!
//! Parquet starts every column chunk with a dictionary and falls back to
//! plain values once the dictionary outgrows its page (1 MiB). Interning
//! each value costs a hash and a probe: worth it for a column of few
//! distinct values (flags, codes, names), wasted on identifiers and
//! measurements, which overflow anyway. So each commit samples its rows
//! and keeps the dictionary only for the columns whose sample repeats.

use std::collections::HashSet;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::table::{FloatColumns, ParquetCompression, TableConfig};

/// Values sampled per column (nulls left out), spread over the commit's
/// batches.
const SAMPLE_ROWS: usize = 1024;

/// Batches the sample is drawn from (evenly spaced), so that one
/// producer's request does not stand for all.
const SAMPLE_BATCHES: usize = 8;

/// A column keeps its dictionary when at most this share of its sampled
/// values are distinct (1 in 4).
const DISTINCT_SHARE_FOR_DICTIONARY: usize = 4;

/// The Parquet writer settings for a commit of `batches` (all of one
/// schema, not empty).
pub(super) fn writer_properties(config: &TableConfig, batches: &[RecordBatch]) -> WriterProperties {
    let codec = match config.compression {
        ParquetCompression::Zstd => {
            Compression::ZSTD(ZstdLevel::try_new(config.zstd_level).unwrap_or_default())
        }
        ParquetCompression::Lz4 => Compression::LZ4_RAW,
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::Uncompressed => Compression::UNCOMPRESSED,
    };
    let mut properties = WriterProperties::builder().set_compression(codec);
    let Some(first) = batches.first() else {
        return properties.build();
    };
    for (index, field) in first.schema().fields().iter().enumerate() {
        let path = ColumnPath::from(field.name().as_str());
        properties =
            properties.set_column_dictionary_enabled(path.clone(), repeats(batches, index));
        if config.float_columns == FloatColumns::SplitLz4
            && matches!(field.data_type(), DataType::Float32 | DataType::Float64)
        {
            properties = properties
                .set_column_encoding(path.clone(), Encoding::BYTE_STREAM_SPLIT)
                .set_column_compression(path, Compression::LZ4_RAW);
        }
    }
    properties.build()
}

/// Whether the sampled values of column `index` repeat enough for a
/// dictionary to pay. Floating-point columns (measurements) never do;
/// columns of types Arrow's row format does not take keep Parquet's
/// default.
fn repeats(batches: &[RecordBatch], index: usize) -> bool {
    let data_type = batches[0].schema().field(index).data_type().clone();
    if data_type.is_floating() {
        return false;
    }
    let Ok(converter) = RowConverter::new(vec![SortField::new(data_type)]) else {
        return true;
    };
    let step = batches.len().div_ceil(SAMPLE_BATCHES);
    let per_batch = SAMPLE_ROWS / batches.len().div_ceil(step);
    let mut distinct = HashSet::new();
    let mut sampled = 0usize;
    for batch in batches.iter().step_by(step) {
        let column = batch.column(index);
        let taken = column.slice(0, column.len().min(per_batch));
        let Ok(rows) = converter.convert_columns(std::slice::from_ref(&taken)) else {
            return true;
        };
        for (i, row) in rows.iter().enumerate() {
            if taken.is_valid(i) {
                sampled += 1;
                distinct.insert(row.owned());
            }
        }
    }
    sampled == 0 || distinct.len() * DISTINCT_SHARE_FOR_DICTIONARY <= sampled
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(offset: i64) -> RecordBatch {
        let rows = 500;
        let schema = Schema::new(vec![
            Field::new("flag", DataType::Int64, true),
            Field::new("id", DataType::Int64, false),
            Field::new("band", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("mag", DataType::Float64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from_iter(
                    (0..rows).map(|i| (i % 5 != 0).then_some(i % 3)),
                )),
                Arc::new(Int64Array::from_iter_values((0..rows).map(|i| offset + i))),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| ["w1", "w2"][i as usize % 2]),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("J{:08}", offset + i)),
                )),
                Arc::new(Float64Array::from_iter_values((0..rows).map(|_| 1.0))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn only_columns_whose_sample_repeats_keep_a_dictionary() {
        let batches: Vec<_> = (0..20).map(|b| batch(b * 500)).collect();
        let properties = writer_properties(&TableConfig::for_tests(), &batches);
        let dictionary = |name: &str| properties.dictionary_enabled(&ColumnPath::from(name));
        assert!(dictionary("flag"), "few distinct values, some null");
        assert!(!dictionary("id"), "every value distinct");
        assert!(dictionary("band"));
        assert!(!dictionary("name"));
        assert!(!dictionary("mag"), "floating point, even though it repeats");
    }

    #[test]
    fn floating_point_columns_are_split_and_lz4_unless_plain_is_asked_for() {
        let batches = [batch(0)];
        let config = TableConfig::for_tests();
        let split = writer_properties(&config, &batches);
        let mag = ColumnPath::from("mag");
        assert_eq!(split.encoding(&mag), Some(Encoding::BYTE_STREAM_SPLIT));
        assert_eq!(split.compression(&mag), Compression::LZ4_RAW);
        assert!(!split.dictionary_enabled(&mag));
        // The other columns keep the table's codec and Parquet's encodings.
        let id = ColumnPath::from("id");
        assert_eq!(split.encoding(&id), None);
        assert!(matches!(split.compression(&id), Compression::ZSTD(_)));

        let plain = TableConfig {
            float_columns: FloatColumns::Plain,
            compression: ParquetCompression::Snappy,
            ..config
        };
        let plain = writer_properties(&plain, &batches);
        assert_eq!(plain.encoding(&mag), None);
        assert_eq!(plain.compression(&mag), Compression::SNAPPY);
        assert!(!plain.dictionary_enabled(&mag));
    }

    #[test]
    fn a_sliced_column_is_sampled_from_its_own_rows() {
        // The first half of `code` repeats one value, the second half is all
        // distinct: sliced to its second half, it gets no dictionary.
        let code = Int64Array::from_iter_values((0..500).map(|i| if i < 250 { 7 } else { i }));
        let schema = Schema::new(vec![Field::new("code", DataType::Int64, false)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(code)]).unwrap();
        let dictionary = |batch: RecordBatch| {
            writer_properties(&TableConfig::for_tests(), &[batch])
                .dictionary_enabled(&ColumnPath::from("code"))
        };
        assert!(!dictionary(batch.slice(250, 250)));
        assert!(dictionary(batch.slice(0, 250)));
    }
}
