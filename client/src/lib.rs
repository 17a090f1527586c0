//! weir's Rust client: a producer SDK and a query API.
//!
//! A [`SqlClient`] runs SQL over FlightSQL (see [`query`]); `weir sql` is
//! built on it. A [`Client`] opens [`Stream`]s to tables over Arrow Flight `DoPut`, of
//! Arrow batches ([`Client::open_stream`]) or of protobuf or JSON records
//! ([`Client::open_records_stream`]). A stream numbers its requests 0, 1, 2, ... (the `offset_id` of weir's ingest
//! convention), keeps every request the server has not acknowledged in a
//! bounded in-flight buffer, and exposes the server's cumulative acks: an
//! ack for offset `n` means batches `0..=n` are durable in the server's WAL
//! and visible to SQL.
//!
//! ```no_run
//! # async fn example() -> Result<(), weir_client::Error> {
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use weir_client::{Client, StreamOptions};
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let mut stream = client.open_stream("sensors", Arc::clone(&schema), StreamOptions::default()).await?;
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])?;
//! let offset = stream.send(batch).await?;   // returns once the batch is in flight
//! stream.wait_for(offset).await?;           // returns once it is durable and queryable
//! let acked = stream.close().await?;        // flushes, then ends the stream
//! assert_eq!(acked.records, 3);
//! # Ok(())
//! # }
//! ```

mod error;
pub mod query;
mod stream;

pub use error::{Error, Result};
pub use query::{ConnectOptions, Rows, SqlClient, TableInfo};
pub use stream::{Ack, Client, STREAM_NAME_HEADER, Stream, StreamOptions};
