//! Arrow IPC: one record batch as one self-describing byte string.
//!
//! The write-ahead log stores each accepted batch in this form. Each blob is
//! a complete Arrow IPC stream (schema message, one batch, end marker), so a
//! blob decodes on its own, in any order, with no state carried between
//! records.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::{Error, Result};

/// Encodes `batch` as a self-contained Arrow IPC stream.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded_size_hint(batch));
    encode_into(batch, &mut out)?;
    Ok(out)
}

/// About the size of `batch`'s encoding, a little more rather than less:
/// its data plus room for the framing (the schema message, the batch header
/// and each buffer's padding to 64 bytes: a few hundred bytes per column).
/// Counts only the bytes the arrays use, not whole buffers: the protobuf
/// decoder's 64-bit columns are slices of one shared buffer, which
/// `get_array_memory_size` would count once per column.
pub fn encoded_size_hint(batch: &RecordBatch) -> usize {
    const FRAMING_PER_COLUMN: usize = 384;
    let data: usize = batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum();
    data + 1024 + FRAMING_PER_COLUMN * batch.num_columns()
}

/// Appends the encoding of `batch` to `out`, so a caller can put its own
/// header in front without copying the batch a second time.
pub fn encode_into(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let mut writer = StreamWriter::try_new(out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(())
}

/// Decodes a blob written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| Error::InvalidIpc(e.to_string()))?;
    let batch = reader
        .next()
        .ok_or_else(|| Error::InvalidIpc("the stream holds no record batch".into()))?
        .map_err(|e| Error::InvalidIpc(e.to_string()))?;
    if reader.next().is_some() {
        return Err(Error::InvalidIpc(
            "the stream holds more than one record batch".into(),
        ));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;

    #[test]
    fn round_trip() {
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as _),
            ("s", Arc::new(StringArray::from(vec![Some("a"), None])) as _),
        ])
        .unwrap();
        assert_eq!(decode(&encode(&batch).unwrap()).unwrap(), batch);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode(b"not ipc"), Err(Error::InvalidIpc(_))));
        let good = encode(
            &RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1])) as _)])
                .unwrap(),
        )
        .unwrap();
        assert!(decode(&good[..good.len() / 2]).is_err());
    }
}
