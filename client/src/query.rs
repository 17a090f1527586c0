//! Queries over FlightSQL: [`SqlClient`] runs statements and reads the
//! catalog; [`Rows`] streams a result batch by batch.

use std::collections::VecDeque;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::CommandGetTables;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{Error, Result};

/// How to reach a server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A bearer token from the server's token endpoint, for a server with
    /// authentication on.
    pub token: Option<String>,
    /// For an `https://` address: a PEM certificate authority to trust
    /// besides the system's (a server with a certificate of its own CA).
    pub ca_pem: Option<Vec<u8>>,
}

/// A channel to `address`: `http://` in the clear, `https://` over TLS
/// with the system's roots and `options.ca_pem`. It connects again by
/// itself when a call finds its connection gone.
pub(crate) async fn channel(address: &str, options: &ConnectOptions) -> Result<Channel> {
    let connect_error = |reason: String| Error::Connect {
        address: address.to_string(),
        reason,
    };
    let mut endpoint =
        Endpoint::from_shared(address.to_string()).map_err(|e| connect_error(e.to_string()))?;
    if address.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = &options.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| connect_error(e.to_string()))?;
    } else if options.ca_pem.is_some() {
        return Err(connect_error(
            "a CA certificate was given for an address without TLS: use https://".into(),
        ));
    }
    endpoint
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| connect_error(format!("{e}{}", source_chain(&e))))
}

/// The causes of `e`, each after ": " (a TLS or DNS failure is only in
/// the chain).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut chain = String::new();
    let mut source = e.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// A FlightSQL connection to a weir server (or any FlightSQL server).
///
/// ```no_run
/// # async fn example() -> Result<(), weir_client::Error> {
/// use weir_client::{ConnectOptions, SqlClient};
///
/// let mut sql = SqlClient::connect("http://127.0.0.1:50051", &ConnectOptions::default()).await?;
/// let mut rows = sql.query("SELECT site, count(*) FROM sensors GROUP BY site").await?;
/// while let Some(batch) = rows.next_batch().await? {
///     println!("{} rows", batch.num_rows());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SqlClient {
    flight: FlightSqlServiceClient<Channel>,
}

/// A table and its columns, as the catalog lists it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub columns: SchemaRef,
}

impl SqlClient {
    /// Connects to `address`, e.g. `http://127.0.0.1:50051` or
    /// `https://weir.example:50051`.
    pub async fn connect(address: &str, options: &ConnectOptions) -> Result<Self> {
        let mut flight = FlightSqlServiceClient::new(channel(address, options).await?);
        if let Some(token) = &options.token {
            flight.set_token(token.clone());
        }
        Ok(Self { flight })
    }

    /// Runs one statement. A query's rows stream from the server as they
    /// are read; DDL answers no columns, an `INSERT` one row (`count`).
    pub async fn query(&mut self, sql: &str) -> Result<Rows<'_>> {
        let info = self
            .flight
            .execute(sql.to_string(), None)
            .await
            .map_err(from_flight)?;
        let schema = info.clone().try_decode_schema()?;
        let tickets = info.endpoint.into_iter().filter_map(|e| e.ticket).collect();
        Ok(Rows {
            flight: &mut self.flight,
            schema: std::sync::Arc::new(schema),
            tickets,
            current: None,
        })
    }

    /// The tables the caller may read, with their columns, by name.
    pub async fn tables(&mut self) -> Result<Vec<TableInfo>> {
        let command = CommandGetTables {
            include_schema: true,
            ..Default::default()
        };
        let info = self.flight.get_tables(command).await.map_err(from_flight)?;
        let mut rows = Rows {
            schema: std::sync::Arc::new(Schema::empty()),
            tickets: info.endpoint.into_iter().filter_map(|e| e.ticket).collect(),
            flight: &mut self.flight,
            current: None,
        };
        let mut tables = Vec::new();
        while let Some(batch) = rows.next_batch().await? {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::Protocol(format!("GetTables answered no {name:?}")))
            };
            let names = arrow::array::AsArray::as_string_opt::<i32>(column("table_name")?)
                .ok_or_else(|| Error::Protocol("GetTables: table_name is not text".into()))?;
            let schemas = arrow::array::AsArray::as_binary_opt::<i32>(column("table_schema")?)
                .ok_or_else(|| Error::Protocol("GetTables: table_schema is not binary".into()))?;
            for (name, schema) in names.iter().zip(schemas.iter()) {
                let (Some(name), Some(schema)) = (name, schema) else {
                    continue;
                };
                let columns = arrow::ipc::convert::try_schema_from_ipc_buffer(schema)?;
                tables.push(TableInfo {
                    name: name.to_string(),
                    columns: std::sync::Arc::new(columns),
                });
            }
        }
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tables)
    }
}

/// A statement's result: its schema at once, then its batches as the
/// server sends them, so a result never needs to fit in memory.
#[derive(Debug)]
pub struct Rows<'a> {
    flight: &'a mut FlightSqlServiceClient<Channel>,
    schema: SchemaRef,
    /// The endpoints not yet read.
    tickets: VecDeque<Ticket>,
    current: Option<FlightRecordBatchStream>,
}

impl Rows<'_> {
    /// The result's columns (none for DDL).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next batch, or `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(stream) = &mut self.current {
                match stream.try_next().await.map_err(from_flight)? {
                    Some(batch) => return Ok(Some(batch)),
                    None => self.current = None,
                }
            }
            let Some(ticket) = self.tickets.pop_front() else {
                return Ok(None);
            };
            self.current = Some(self.flight.do_get(ticket).await.map_err(from_flight)?);
        }
    }

    /// Every remaining batch.
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            batches.push(batch);
        }
        Ok(batches)
    }
}

fn from_flight(e: FlightError) -> Error {
    match e {
        FlightError::Tonic(status) => Error::Server(*status),
        FlightError::Arrow(e) => Error::Arrow(e),
        other => Error::Protocol(other.to_string()),
    }
}
