//! What the tables put in the write-ahead log.
//!
//! The WAL stores opaque payloads; a table's payload is one accepted batch,
//! already cast to the table's schema. Layout (little endian):
//!
//! ```text
//! +---------+-------------+----------+-------------+-----------+-----------+-------------------+
//! | version | table id len| table id | stream len  | stream    | offset id | Arrow IPC stream  |
//! | u8 = 1  | u16         | utf-8    | u16         | utf-8     | i64       | (rest of payload) |
//! +---------+-------------+----------+-------------+-----------+-----------+-------------------+
//! ```
//!
//! The table id is the Delta table's metadata id, not its name, so a table
//! dropped and created again under the same name never receives the old
//! table's records on replay. The stream name and offset let a later
//! restart rebuild where each named stream stood.

use arrow::array::RecordBatch;
use bytes::{BufMut, Bytes};

const VERSION: u8 = 1;

/// One table write, as stored in the WAL.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The Delta metadata id of the table.
    pub table_id: String,
    /// The producer's stream, empty for anonymous streams.
    pub stream: String,
    /// The producer's `offset_id` of this request.
    pub offset_id: i64,
    /// The rows, in the table's schema.
    pub batch: RecordBatch,
}

/// Encodes an entry; the IPC encoding of the batch is the costly part.
pub fn encode(
    table_id: &str,
    stream: &str,
    offset_id: i64,
    batch: &RecordBatch,
) -> weir_codec::Result<Bytes> {
    let header_len = 13 + table_id.len() + stream.len();
    let mut out = Vec::with_capacity(header_len + weir_codec::ipc::encoded_size_hint(batch));
    out.put_u8(VERSION);
    put_str(&mut out, table_id);
    put_str(&mut out, stream);
    out.put_i64_le(offset_id);
    // The rows are written once, straight behind the header.
    weir_codec::ipc::encode_into(batch, &mut out)?;
    Ok(Bytes::from(out))
}

/// Reads only the table id, to route a record without decoding its rows.
pub fn table_id(payload: &[u8]) -> Result<&str, String> {
    let mut reader = Reader(payload);
    reader.version()?;
    reader.str()
}

/// Decodes a whole entry.
pub fn decode(payload: &[u8]) -> Result<Entry, String> {
    let mut reader = Reader(payload);
    reader.version()?;
    let table_id = reader.str()?.to_string();
    let stream = reader.str()?.to_string();
    let offset_id = i64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
    let batch = weir_codec::ipc::decode(reader.0).map_err(|e| e.to_string())?;
    Ok(Entry {
        table_id,
        stream,
        offset_id,
        batch,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Table ids are UUIDs and stream names are checked to be short, so the
    // length always fits; saturating keeps a bug from turning into a panic.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.put_u16_le(len);
    out.put_slice(&s.as_bytes()[..usize::from(len)]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "entry ends early: wanted {n} bytes, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn version(&mut self) -> Result<(), String> {
        match self.take(1)?[0] {
            VERSION => Ok(()),
            v => Err(format!("unknown entry version {v}")),
        }
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        std::str::from_utf8(self.take(usize::from(len))?).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    #[test]
    fn round_trip() {
        let batch =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 2])) as _)])
                .unwrap();
        let bytes = encode("0b9c-id", "stream-7", 42, &batch).unwrap();
        assert_eq!(table_id(&bytes).unwrap(), "0b9c-id");
        let entry = decode(&bytes).unwrap();
        assert_eq!(entry.table_id, "0b9c-id");
        assert_eq!(entry.stream, "stream-7");
        assert_eq!(entry.offset_id, 42);
        assert_eq!(entry.batch, batch);
    }

    #[test]
    fn truncated_entries_are_errors() {
        let batch =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
        let bytes = encode("t", "", 0, &batch).unwrap();
        for cut in [0, 1, 3, 6, 12] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[9, 0, 0]).unwrap_err().contains("version 9"));
    }
}
