//! Named streams: where each one stands, kept with the data it covers.
//!
//! A producer may name its stream. Every request of a named stream carries
//! the stream's own `offset_id`, which goes on across connections, so after
//! a reconnect or a restart the server can say how far the stream is
//! durable and the producer resends only the rest.
//!
//! Where a stream stands lives in two places, always with the data:
//! - in the WAL: each entry carries its stream name and offset (see
//!   [`crate::entry`]), so replay rebuilds the offsets of the rows not yet
//!   in Delta;
//! - in Delta: each commit carries, next to the node's `txn` watermark, one
//!   `txn { appId: "weir-stream/<name>", version: <offset> }` per named
//!   stream whose rows it holds, in the same atomic log entry.
//!
//! So a stream's durable offset is the larger of the two. The table keeps it
//! in memory for every name seen since the server started (a map entry of
//! a few dozen bytes per name) and reads Delta for a name it has not seen.
//! Delta keeps the latest `txn` of every app id in each checkpoint, so a
//! name is remembered as long as the table exists (or, if the table sets
//! `delta.setTransactionRetentionDuration`, that long after its last
//! write); each name costs one small row in every checkpoint.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use weir_codec::Echo;

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 256;

/// A producer's stream name, checked: 1 to 256 bytes of printable ASCII
/// (letters, digits and punctuation; no spaces or control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(Arc<str>);

/// A stream name that weir does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream name {}: {reason}", Echo(.name))]
pub struct InvalidStreamName {
    pub name: String,
    pub reason: &'static str,
}

impl StreamName {
    /// Checks `name`.
    pub fn parse(name: &str) -> Result<Self, InvalidStreamName> {
        let invalid = |reason| InvalidStreamName {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_STREAM_NAME_LEN {
            return Err(invalid("it is longer than 256 bytes"));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "it may hold only printable ASCII, without spaces or control characters",
            ));
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Delta `txn` app id that records this stream's offset.
    pub(crate) fn app_id(&self) -> String {
        format!("weir-stream/{}", self.0)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The offset of a stream's request, as it sits in the tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamMark {
    pub name: StreamName,
    pub offset: i64,
}

/// The durable offset of every named stream seen since start.
#[derive(Debug, Default)]
pub(crate) struct StreamOffsets(HashMap<StreamName, i64>);

impl StreamOffsets {
    pub fn get(&self, name: &StreamName) -> Option<i64> {
        self.0.get(name).copied()
    }

    /// Raises `name`'s offset to `offset` (never lowers it).
    pub fn raise(&mut self, name: &StreamName, offset: i64) {
        let known = self.0.entry(name.clone()).or_insert(offset);
        *known = (*known).max(offset);
    }
}

/// The highest offset of each stream among `marks`, in name order.
pub(crate) fn latest<'a>(marks: impl IntoIterator<Item = &'a StreamMark>) -> Vec<StreamMark> {
    let mut latest = StreamOffsets::default();
    for mark in marks {
        latest.raise(&mark.name, mark.offset);
    }
    let mut marks: Vec<StreamMark> = latest
        .0
        .into_iter()
        .map(|(name, offset)| StreamMark { name, offset })
        .collect();
    marks.sort_by(|a, b| a.name.cmp(&b.name));
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(StreamName::parse("sensor-7/host.a:1").is_ok());
        for (name, reason) in [
            ("", "empty"),
            ("a b", "printable"),
            ("tab\there", "printable"),
            ("é", "printable"),
        ] {
            let err = StreamName::parse(name).unwrap_err().to_string();
            assert!(err.contains(reason), "{name:?}: {err}");
        }
        let long = "x".repeat(MAX_STREAM_NAME_LEN + 1);
        assert!(StreamName::parse(&long[..MAX_STREAM_NAME_LEN]).is_ok());
        let err = StreamName::parse(&long).unwrap_err().to_string();
        assert!(err.contains("256 bytes") && err.len() < 400, "{err}");
    }

    #[test]
    fn the_latest_offset_of_each_stream_wins() {
        let a = StreamName::parse("a").unwrap();
        let b = StreamName::parse("b").unwrap();
        let mark = |name: &StreamName, offset| StreamMark {
            name: name.clone(),
            offset,
        };
        let marks = [mark(&b, 3), mark(&a, 1), mark(&b, 4), mark(&a, 0)];
        assert_eq!(latest(&marks), vec![mark(&a, 1), mark(&b, 4)]);
        let mut offsets = StreamOffsets::default();
        offsets.raise(&a, 5);
        offsets.raise(&a, 2);
        assert_eq!(offsets.get(&a), Some(5));
        assert_eq!(offsets.get(&b), None);
    }
}
