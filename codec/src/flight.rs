//! The metadata of the Arrow Flight `DoPut` ingest convention, written down
//! once for the server and for `weir-client`: the headers, a request's
//! `app_metadata` and the acks.
//!
//! ```
//! use weir_codec::flight::{AckMetadata, RequestMetadata};
//!
//! let request = RequestMetadata { offset_id: 3 };
//! assert_eq!(request.encode(), br#"{"offset_id":3}"#);
//! assert_eq!(RequestMetadata::decode(&request.encode()), Ok(Some(request)));
//! assert_eq!(RequestMetadata::decode(b""), Ok(None)); // the next offset
//!
//! let ack = AckMetadata::ack(3, 120);
//! assert_eq!(ack.encode(), br#"{"ack_up_to_offset":3,"ack_up_to_records":120}"#);
//! let closing = AckMetadata { close_stream_duration_ms: Some(1000), ..ack };
//! assert_eq!(AckMetadata::decode(&closing.encode()), Ok(closing));
//! ```

use serde::{Deserialize, Serialize};

/// The header naming the table, as the Zerobus SDKs send it.
pub const TABLE_HEADER: &str = "x-databricks-zerobus-table-name";

/// The header naming a resumable stream.
pub const STREAM_NAME_HEADER: &str = "x-weir-stream-name";

/// The offset of the ready ack of a new or anonymous stream: nothing
/// durable yet.
pub const READY_OFFSET: i64 = -1;

/// A request's `app_metadata`: `{"offset_id": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMetadata {
    pub offset_id: i64,
}

impl RequestMetadata {
    pub fn encode(&self) -> Vec<u8> {
        format!("{{\"offset_id\":{}}}", self.offset_id).into_bytes()
    }

    /// The metadata of a request; `None` when it has none (it takes the
    /// next offset). The error says what is wrong.
    pub fn decode(app_metadata: &[u8]) -> Result<Option<Self>, String> {
        if app_metadata.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(app_metadata)
            .map(Some)
            .map_err(|e| format!("batch app_metadata must be JSON {{\"offset_id\": n}}: {e}"))
    }
}

/// An ack's `app_metadata`: every request up to `ack_up_to_offset` is
/// durable, `ack_up_to_records` rows in all on this connection. With
/// `close_stream_duration_ms` the server also says it will end the stream
/// that many milliseconds later (the producer moves to a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMetadata {
    pub ack_up_to_offset: i64,
    pub ack_up_to_records: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_stream_duration_ms: Option<u64>,
}

impl AckMetadata {
    /// A plain ack.
    pub fn ack(offset: i64, records: i64) -> Self {
        Self {
            ack_up_to_offset: offset,
            ack_up_to_records: records,
            close_stream_duration_ms: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ack serializes")
    }

    pub fn decode(app_metadata: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(app_metadata).map_err(|e| {
            format!(
                "not an ack ({e}): {}",
                String::from_utf8_lossy(&app_metadata[..app_metadata.len().min(200)])
            )
        })
    }
}
