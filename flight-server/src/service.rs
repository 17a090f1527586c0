//! The gRPC service: Arrow Flight ingest and FlightSQL on one port.
//!
//! FlightSQL commands go to the SQL engine; a `DoPut` whose descriptor is
//! not a FlightSQL command is ingest (see [`crate::ingest`]).
//!
//! Statements: `GetFlightInfo(CommandStatementQuery)` plans the query (and
//! runs DDL at once, so that it runs exactly once) and returns a ticket
//! holding the SQL, signed with a key of this server's run; `DoGet` checks
//! the signature, plans the SQL again (refusing anything but a query) and
//! streams the rows, so what a query sees is the table as of `DoGet`. A
//! crafted or altered ticket runs nothing. `DoPut(CommandStatementUpdate)`
//! runs DDL and returns 0 affected rows. Catalog metadata is in
//! [`crate::metadata`].

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{MutableArrayData, RecordBatch, RecordBatchOptions, make_array};
use arrow::error::ArrowError;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use ring::hmac;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use weir_provider::Catalog;
use weir_sql::{Access, Prepared, SqlEngine};

use crate::auth::Auth;
use crate::ingest::Ingest;
use crate::metadata;
use crate::session::Sessions;
use crate::{Config, Error};

/// Ticket handles: a query's SQL, signed, or a statement that already ran.
const QUERY_PREFIX: &[u8] = b"q1:";
const DONE_HANDLE: &[u8] = b"done";

/// Bytes of the signature a query handle starts with.
const HANDLE_TAG_BYTES: usize = 32;

/// weir's Flight and FlightSQL service.
#[derive(Clone)]
pub struct WeirService {
    engine: SqlEngine,
    ingest: Ingest,
    /// Signs the query handles this server hands out, so that `DoGet`
    /// runs only SQL a client submitted as a query (a key per start: a
    /// handle does not outlive the server).
    tickets: Arc<hmac::Key>,
}

impl std::fmt::Debug for WeirService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeirService")
            .field("engine", &self.engine)
            .field("ingest", &self.ingest)
            .finish_non_exhaustive()
    }
}

impl WeirService {
    /// A service over `catalog` with the limits of `config`; streams end
    /// when `shutdown` turns true.
    pub fn new(
        catalog: Arc<Catalog>,
        config: &Config,
        auth: Option<Arc<Auth>>,
        shutdown: watch::Receiver<bool>,
    ) -> crate::Result<Self> {
        let tickets = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| Error::Internal("no system randomness for the ticket key".into()))?;
        Ok(Self {
            tickets: Arc::new(tickets),
            engine: SqlEngine::new(Arc::clone(&catalog), config.query_config())?,
            ingest: Ingest::new(
                catalog,
                auth,
                Sessions::new(&config.data_dir)?,
                (config.limits.request_limits(), config.limits.max_streams),
                shutdown,
            ),
        })
    }

    /// An ingest `DoPut`. A stream that cannot start answers with its error
    /// as the first response message rather than failing the call: the
    /// Zerobus SDKs read setup errors (such as a schema mismatch) there.
    async fn put(
        &self,
        request: Request<PeekableFlightDataStream>,
    ) -> <Self as FlightService>::DoPutStream {
        match self.ingest.do_put(request).await {
            Ok(acks) => acks,
            Err(e) => futures::stream::once(async move { Err(Status::from(e)) }).boxed(),
        }
    }

    /// Plans `sql` for the caller of a call with `metadata`: every table
    /// it reads, and DDL, must be within the caller's grants.
    async fn prepare(&self, sql: &str, metadata: &MetadataMap) -> Result<Prepared, Status> {
        self.prepare_as(sql, metadata, true).await
    }

    /// [`WeirService::prepare`]; without `ddl`, DDL is refused before it
    /// runs.
    async fn prepare_as(
        &self,
        sql: &str,
        metadata: &MetadataMap,
        ddl: bool,
    ) -> Result<Prepared, Status> {
        let principal = self.ingest.principal(metadata)?;
        let allow = |access: Access<'_>| {
            match access {
                Access::Read(table) => principal.check_read(table),
                Access::Ddl if !ddl => Err(Error::PermissionDenied(
                    "a ticket runs only the query it was issued for".into(),
                )),
                Access::Ddl => principal.check_ddl(),
            }
            .map_err(|e| match e {
                Error::PermissionDenied(reason) => reason,
                other => other.to_string(),
            })
        };
        Ok(self
            .engine
            .prepare_checked(sql, &allow)
            .await
            .map_err(Error::from)?)
    }

    /// The handle of a query: its SQL, signed.
    fn query_handle(&self, sql: &str) -> Vec<u8> {
        let tag = hmac::sign(&self.tickets, sql.as_bytes());
        [QUERY_PREFIX, tag.as_ref(), sql.as_bytes()].concat()
    }

    /// The SQL of a query handle this server issued.
    fn query_of<'a>(&self, handle: &'a [u8]) -> Result<&'a str, Error> {
        let invalid = || {
            Error::BadRequest(
                "unknown, forged or expired statement handle (handles do not outlive a server \
                 restart): call GetFlightInfo again"
                    .into(),
            )
        };
        let signed = handle.strip_prefix(QUERY_PREFIX).ok_or_else(invalid)?;
        if signed.len() < HANDLE_TAG_BYTES {
            return Err(invalid());
        }
        let (tag, sql) = signed.split_at(HANDLE_TAG_BYTES);
        hmac::verify(&self.tickets, sql, tag).map_err(|_| invalid())?;
        std::str::from_utf8(sql).map_err(|_| invalid())
    }

    /// The ingest layer, to share with the other ingest services.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }
}

type DataStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightSqlService for WeirService {
    type FlightService = WeirService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let prepared = self.prepare(&query.query, request.metadata()).await?;
        let schema = SqlEngine::result_schema(&prepared);
        let handle = match prepared {
            Prepared::Query { .. } => self.query_handle(&query.query),
            Prepared::Done => DONE_HANDLE.to_vec(),
        };
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Error::Internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.ingest.principal(request.metadata())?;
        let handle = ticket.statement_handle.as_ref();
        if handle == DONE_HANDLE {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        }
        let sql = self.query_of(handle)?;
        // Only a query: a handle is never a way to run DDL.
        let Prepared::Query { plan, context } =
            self.prepare_as(sql, request.metadata(), false).await?
        else {
            return Err(Error::BadRequest("the ticket does not hold a query".into()).into());
        };
        let stream = self
            .engine
            .execute(plan, &context)
            .await
            .map_err(Error::from)?;
        let schema = stream.schema();
        let batches = stream
            .map_err(|e| Error::Sql(e.into()))
            .and_then(|batch| async move {
                own_buffers(batch).map_err(|e| Error::Internal(e.to_string()))
            })
            .map_err(|e| arrow_flight::error::FlightError::from(Status::from(e)));
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(data)))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        match self.prepare(&command.query, request.metadata()).await? {
            Prepared::Done => Ok(0),
            Prepared::Query { .. } => Err(Error::BadRequest(
                "a query is not an update: run it with CommandStatementQuery".into(),
            )
            .into()),
        }
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        Ok(self
            .ingest
            .bulk_ingest(&principal, &command, request.into_inner())
            .await?)
    }

    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Ok(Response::new(self.put(request).await))
    }

    /// A `DoPut` without a descriptor is ingest: the Zerobus SDKs name the
    /// table only in a header.
    async fn do_put_error_callback(
        &self,
        request: Request<PeekableFlightDataStream>,
        error: DoPutError,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        match error {
            DoPutError::MissingFlightDescriptor => Ok(Response::new(self.put(request).await)),
            DoPutError::MissingCommand => {
                Err(Error::BadRequest("empty DoPut stream".into()).into())
            }
        }
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ingest.principal(request.metadata())?;
        let schema = metadata::catalogs_schema(&query);
        Ok(Response::new(metadata::info(
            &query,
            &schema,
            request.into_inner(),
        )?))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::catalogs(query)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ingest.principal(request.metadata())?;
        let schema = metadata::schemas_schema(&query);
        Ok(Response::new(metadata::info(
            &query,
            &schema,
            request.into_inner(),
        )?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::schemas(query)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ingest.principal(request.metadata())?;
        let schema = metadata::tables_schema(&query);
        Ok(Response::new(metadata::info(
            &query,
            &schema,
            request.into_inner(),
        )?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::tables(
            query,
            self.engine.catalog(),
            &principal,
        )?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ingest.principal(request.metadata())?;
        let schema = metadata::table_types_schema(&query);
        Ok(Response::new(metadata::info(
            &query,
            &schema,
            request.into_inner(),
        )?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::table_types(query)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ingest.principal(request.metadata())?;
        let schema = metadata::sql_info_schema(&query);
        Ok(Response::new(metadata::info(
            &query,
            &schema,
            request.into_inner(),
        )?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::sql_info(query)?))
    }
}

/// Gives every column of `batch` buffers of its own where it shares one with
/// other columns: the protobuf decoder keeps a batch's root-level 64-bit
/// columns in one buffer, and rows not yet committed are queried as
/// decoded. The Flight encoder splits batches into messages by buffer
/// capacity, so it would count a shared buffer once per column and send the
/// rows in many tiny messages. Only primitive columns whose buffers are
/// more than twice what they use are copied.
fn own_buffers(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        // The decoder shares buffers between primitive columns only.
        let shared = column.data_type().is_primitive()
            && column
                .to_data()
                .get_slice_memory_size()
                .is_ok_and(|used| column.get_buffer_memory_size() > 2 * used + 4096);
        if !shared {
            columns.push(Arc::clone(column));
            continue;
        }
        let data = column.to_data();
        let mut copy = MutableArrayData::new(vec![&data], false, data.len());
        copy.try_extend(0, 0, data.len())?;
        columns.push(make_array(copy.freeze()));
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(batch.schema(), columns, &options)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, ArrayRef, Int64Array, StringViewArray};

    use super::*;

    #[test]
    fn columns_sharing_a_buffer_get_their_own_and_others_stay() {
        let big = Int64Array::from_iter_values(0..100_000);
        let slice: ArrayRef = Arc::new(big.slice(500, 10));
        let small: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10));
        let views: ArrayRef = Arc::new(StringViewArray::from_iter_values(
            (0..10).map(|i| format!("a string longer than twelve bytes {i}")),
        ));
        let batch = RecordBatch::try_from_iter([
            ("slice", Arc::clone(&slice)),
            ("small", Arc::clone(&small)),
            ("views", Arc::clone(&views)),
        ])
        .unwrap();
        let owned = own_buffers(batch.clone()).unwrap();
        assert_eq!(owned, batch);
        assert!(owned.column(0).get_buffer_memory_size() < 1024);
        // Columns that own their buffers are passed on as they are.
        assert!(Arc::ptr_eq(owned.column(1), &small));
        assert!(Arc::ptr_eq(owned.column(2), &views));
    }
}
