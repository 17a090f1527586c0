//! Bytes to Arrow, with no I/O.
//!
//! weir accepts rows in several encodings and stores them as Arrow record
//! batches in the table's schema. This crate holds the pure conversions:
//!
//! - [`conform`]: check an incoming Arrow batch against a table schema and
//!   cast it losslessly into that schema (the Arrow Flight `DoPut` path);
//! - [`ipc`]: the compact Arrow IPC encoding the write-ahead log stores;
//! - [`ipc_stream`]: a producer's Arrow IPC messages (Flight `DoPut`),
//!   checked against the body and the limits before Arrow decodes them;
//! - [`limits`]: the size budgets every decoder checks before it
//!   allocates;
//! - [`protobuf`]: protobuf records with a descriptor given at run time,
//!   decoded in one pass straight into Arrow columns;
//! - [`json`]: newline-delimited JSON objects or a JSON array of objects;
//! - [`flight`]: the `DoPut` convention's headers, request metadata and
//!   acks, shared by the server and `weir-client`.
//!
//! Nothing here touches the network or the disk, so every rule is tested by
//! plain unit tests.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int32Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//!
//! // The table stores BIGINT; a producer sends INT: widening is lossless.
//! let table = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
//! let input = RecordBatch::try_new(
//!     Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)])),
//!     vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
//! )?;
//! let batch = weir_codec::conform(&input, &table, &weir_codec::Limits::default())?;
//! assert_eq!(batch.schema(), table);
//! # Ok::<(), weir_codec::Error>(())
//! ```

mod conform;
mod error;
pub mod flight;
pub mod ipc;
pub mod ipc_stream;
pub mod json;
pub mod limits;
pub mod protobuf;

pub use conform::{conform, conformed_size_estimate};
pub use error::{Echo, EchoText, Error, MAX_ECHO_BYTES, RecordProblem, Result, prefix};
pub use limits::{Limits, RowWidths};
