//! The gRPC service: Arrow Flight ingest and FlightSQL on one port.
//!
//! FlightSQL commands go to the SQL engine; a `DoPut` whose descriptor is
//! not a FlightSQL command is ingest (see [`crate::ingest`]).
//!
//! Statements run exactly once, when they are executed, never when they
//! are planned or prepared:
//! - `GetFlightInfo(CommandStatementQuery)` plans a query and returns a
//!   signed ticket for it (see [`crate::statements`]); `DoGet` plans it
//!   again and streams the rows, so a query sees the table as of `DoGet`.
//!   DDL and `INSERT` run in `GetFlightInfo` itself (their ticket holds the
//!   outcome), as they do in `DoPut(CommandStatementUpdate)`.
//! - Prepared statements: `CreatePreparedStatement` plans and checks,
//!   answering the result and parameter schemas; `DoPut` on the statement
//!   binds parameter rows; `GetFlightInfo` executes it (a query once per
//!   parameter row, results one after another), `DoPut` as an update
//!   executes DDL or an `INSERT` once per parameter row, all rows written
//!   as one request.
//! - `DoGet` runs only queries: a ticket is never a way to run DDL.
//! - `INSERT INTO ... VALUES / SELECT` writes through the ingest layer:
//!   the rows go through the WAL as one request, all or nothing, with the
//!   checks of any other ingest, and are durable and visible when it
//!   returns.
//! - `CancelFlightInfo` (and the older `CancelQuery`) stops a query; a
//!   query past `limits.query_timeout_ms` stops with DEADLINE_EXCEEDED.
//!
//! Catalog metadata is in [`crate::metadata`], results on the wire in
//! [`crate::execute`].

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use weir_codec::ipc_stream::{IpcMessage as Decoded, IpcStreamDecoder};
use weir_provider::Catalog;
use weir_sql::{Access, Prepared, SqlEngine};

use crate::auth::{Auth, Principal};
use crate::execute::{self, DataStream, OneRequest, parameter_row, parameter_row_count};
use crate::ingest::Ingest;
use crate::metadata;
use crate::session::Sessions;
use crate::statements::{Cancelled, Statements, Ticket as Redeems};
use crate::{Config, Error};

/// Most rows of parameters a query is run with (once per row).
const MAX_QUERY_PARAMETER_ROWS: usize = 10_000;

/// The Flight action that cancels a query (`CancelFlightInfoRequest`).
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// weir's Flight and FlightSQL service.
#[derive(Clone)]
pub struct WeirService {
    engine: SqlEngine,
    ingest: Ingest,
    statements: Arc<Statements>,
    sql_info: Arc<SqlInfoData>,
    /// `limits.query_timeout_ms`.
    query_timeout: Option<Duration>,
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
        Ok(Self {
            statements: Arc::new(Statements::new()?),
            query_timeout: config.limits.query_timeout(),
            sql_info: Arc::new(metadata::sql_info_data(config.limits.query_timeout())),
            engine: SqlEngine::new(Arc::clone(&catalog), config.query_config())?,
            ingest: Ingest::new(
                catalog,
                auth,
                Sessions::new(&config.data_dir)?,
                (config.limits.request_limits(), config.limits.max_streams),
                shutdown,
            )
            .with_sink(config.sink),
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

    /// Plans `sql` for `principal`, changing nothing: every table it reads
    /// or inserts into, and DDL, must be within the principal's grants.
    /// Without `ddl`, DDL is refused (a ticket runs only queries).
    async fn plan(&self, sql: &str, principal: &Principal, ddl: bool) -> Result<Prepared, Error> {
        let allow = |access: Access<'_>| {
            match access {
                Access::Read(table) => principal.check_read(table),
                Access::Write(table) => principal.check_write(table),
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
        Ok(self.engine.prepare_checked(sql, &allow).await?)
    }

    /// Runs a statement with effects, now and once: DDL, or an `INSERT`
    /// once per row of `params`, every row written as one request.
    async fn run_effects(
        &self,
        prepared: Prepared,
        principal: &Principal,
        params: Option<&RecordBatch>,
    ) -> Result<Redeems, Error> {
        match prepared {
            Prepared::Ddl(ddl) => {
                self.engine.apply(ddl).await?;
                Ok(Redeems::Done)
            }
            Prepared::Insert {
                table,
                plan,
                context,
            } => {
                // Taken before the rows are gathered: they count against
                // `limits.max_streams` like any stream's request.
                let slot = self.ingest.open_slot()?;
                let rows = async {
                    let mut rows = OneRequest::new("an INSERT's rows", self.ingest.limits());
                    for row in 0..parameter_row_count(params) {
                        let values = parameter_row(params, row)?;
                        let bound = Prepared::Insert {
                            table: table.clone(),
                            plan: plan.clone(),
                            context: context.clone(),
                        }
                        .bind(values)?;
                        let Prepared::Insert { plan, context, .. } = bound else {
                            return Err(Error::Internal("binding changed the statement".into()));
                        };
                        let mut batches = self.engine.execute(plan, &context).await?;
                        while let Some(batch) = batches.try_next().await.map_err(sql_error)? {
                            rows.push(batch)?;
                        }
                    }
                    rows.finish()
                };
                // The timeout bounds making the rows; once they are handed
                // to ingest, the answer waits for their ack, so that a
                // client is never told of a failure for rows that land.
                let rows = match self.query_timeout {
                    Some(limit) => tokio::time::timeout(limit, rows)
                        .await
                        .map_err(|_| Error::QueryTimeout(millis(limit)))??,
                    None => rows.await?,
                };
                let written = match rows {
                    Some(batch) => self.ingest.insert(slot, principal, &table, batch).await?,
                    None => 0,
                };
                Ok(Redeems::Inserted(u64::try_from(written).unwrap_or(0)))
            }
            Prepared::Query { .. } => Err(Error::Internal(
                "a query was run as a statement with effects".into(),
            )),
        }
    }

    /// A `FlightInfo` whose one endpoint redeems `what`.
    fn flight_info(
        &self,
        schema: &Schema,
        what: &Redeems,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Error> {
        let ticket = TicketStatementQuery {
            statement_handle: self.statements.ticket(what)?.into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        FlightInfo::new()
            .try_with_schema(&execute::wire_schema(schema))
            .map_err(|e| Error::Internal(e.to_string()))
            .map(|info| info.with_endpoint(endpoint).with_descriptor(descriptor))
    }

    /// Streams a query's rows, once per row of `params`, as query `id`.
    fn stream_query(
        &self,
        id: crate::statements::QueryId,
        prepared: Prepared,
        params: Option<&RecordBatch>,
    ) -> Result<DataStream, Error> {
        let running = self.statements.start(id)?;
        let Prepared::Query { plan, context } = prepared else {
            return Err(Error::BadRequest("the ticket does not hold a query".into()));
        };
        let count = parameter_row_count(params);
        if count > MAX_QUERY_PARAMETER_ROWS {
            return Err(Error::MessageTooLarge(format!(
                "{count} rows of parameters for a query, which runs once per row; at most \
                 {MAX_QUERY_PARAMETER_ROWS}"
            )));
        }
        let params = params.cloned();
        let unbound = Arc::clone(plan.schema().inner());
        let bind = move |values: Vec<datafusion::common::ScalarValue>| {
            let query = Prepared::Query {
                plan: plan.clone(),
                context: context.clone(),
            };
            match query.bind(values)? {
                Prepared::Query { plan, context } => Ok((plan, context)),
                _ => Err(Error::Internal("binding changed the statement".into())),
            }
        };
        // The schema once bound: an untyped parameter takes its value's.
        let first = match count {
            0 => None,
            _ => Some(bind(parameter_row(params.as_ref(), 0)?)?),
        };
        let Some((first_plan, first_context)) = first else {
            // No rows of parameters: no results, and the schema.
            let none = futures::stream::empty().boxed();
            return Ok(execute::send(&unbound, none, running, self.query_timeout));
        };
        let schema = Arc::clone(first_plan.schema().inner());
        // The other rows are bound one at a time, as the results before
        // them are sent; each must give the result the first one's types.
        let same = Arc::clone(&schema);
        let later = (1..count).map(move |row| {
            let (plan, context) = bind(parameter_row(params.as_ref(), row)?)?;
            let types = |s: &Schema| {
                s.fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect::<Vec<_>>()
            };
            if types(plan.schema().as_arrow()) != types(&same) {
                return Err(Error::BadRequest(format!(
                    "parameter row {row}: its values give the result other types than the \
                     first row's; bind values of one type per parameter"
                )));
            }
            Ok((plan, context))
        });
        let engine = self.engine.clone();
        let batches =
            futures::stream::iter(std::iter::once(Ok((first_plan, first_context))).chain(later))
                .and_then(move |(plan, context)| {
                    let engine = engine.clone();
                    async move {
                        let batches = engine.execute(plan, &context).await?;
                        Ok::<_, Error>(batches.map_err(sql_error))
                    }
                })
                .try_flatten()
                .boxed();
        Ok(execute::send(&schema, batches, running, self.query_timeout))
    }

    /// The schema a prepared query's result has with `params` bound.
    fn bound_schema(
        prepared: Prepared,
        params: Option<&RecordBatch>,
    ) -> Result<Arc<Schema>, Error> {
        let schema = prepared.result_schema();
        if !matches!(prepared, Prepared::Query { .. }) {
            return Ok(schema);
        }
        if parameter_row_count(params) == 0 {
            return Ok(schema);
        }
        match parameter_row(params, 0)? {
            values if !values.is_empty() => Ok(prepared.bind(values)?.result_schema()),
            _ => Ok(schema),
        }
    }

    /// The parameter rows sent in a `DoPut` on a prepared statement;
    /// `None` if it sent no schema.
    async fn read_params(
        &self,
        mut input: PeekableFlightDataStream,
    ) -> Result<Option<RecordBatch>, Error> {
        // Held while the parameters are gathered, like a stream's request.
        let _slot = self.ingest.open_slot()?;
        let mut decoder = IpcStreamDecoder::new(self.ingest.limits());
        let mut params = OneRequest::new("bound parameters", self.ingest.limits());
        let mut schema = None;
        while let Some(data) = input.next().await {
            let data = data.map_err(Error::from_input)?;
            if data.data_header.is_empty() {
                continue;
            }
            match decoder.decode(&data.data_header, data.data_body)? {
                Decoded::Schema(s) => schema = Some(s),
                Decoded::Batch(batch) => params.push(batch)?,
                Decoded::Dictionary | Decoded::None => {}
            }
        }
        match (schema, params.finish()?) {
            (_, Some(batch)) => Ok(Some(batch)),
            (Some(schema), None) => Ok(Some(RecordBatch::new_empty(schema))),
            (None, None) => Ok(None),
        }
    }

    /// Cancels the queries of `info`'s tickets.
    fn cancel(&self, info: &FlightInfo) -> Result<Cancelled, Error> {
        let mut outcome = Cancelled::NotCancellable;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let handle = Any::decode(ticket.ticket.as_ref())
                .ok()
                .and_then(|any| any.unpack::<TicketStatementQuery>().ok().flatten())
                .ok_or_else(|| {
                    Error::BadRequest("the FlightInfo holds no statement ticket of weir's".into())
                })?;
            match self.statements.cancel(&handle.statement_handle)? {
                Cancelled::NotCancellable => {}
                other => outcome = other,
            }
        }
        Ok(outcome)
    }

    /// The ingest layer, to share with the other ingest services.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }
}

fn sql_error(e: datafusion::error::DataFusionError) -> Error {
    Error::Sql(e.into())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A schema as FlightSQL sends it in a prepared statement's answer.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Error> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Error::Internal(e.to_string()))?;
    Ok(bytes)
}

#[tonic::async_trait]
impl FlightSqlService for WeirService {
    type FlightService = WeirService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if query.transaction_id.is_some() {
            return Err(no_transactions());
        }
        let principal = self.ingest.principal(request.metadata())?;
        let prepared = self.plan(&query.query, &principal, true).await?;
        let schema = prepared.result_schema();
        let what = match prepared {
            Prepared::Query { .. } => Redeems::Query(query.query),
            effects => self.run_effects(effects, &principal, None).await?,
        };
        Ok(Response::new(self.flight_info(
            &schema,
            &what,
            request.into_inner(),
        )?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        let (id, what) = self.statements.redeem(&ticket.statement_handle)?;
        let stream = match what {
            Redeems::Done => metadata::no_keys(Arc::new(Schema::empty()))?,
            Redeems::Inserted(rows) => {
                let count = RecordBatch::try_from_iter([(
                    weir_sql::INSERT_COUNT,
                    Arc::new(UInt64Array::from(vec![rows])) as _,
                )])
                .map_err(|e| Error::Internal(e.to_string()))?;
                metadata::one_batch(count.schema(), Ok(count))?
            }
            // Only a query: a ticket is never a way to run DDL.
            Redeems::Query(sql) => {
                let prepared = self.plan(&sql, &principal, false).await?;
                self.stream_query(id, prepared, None)?
            }
            Redeems::Prepared { handle, generation } => {
                let bound = self.statements.get(&principal, &handle)?;
                if bound.generation != generation {
                    return Err(Error::BadRequest(
                        "parameters were bound to the prepared statement again after this \
                         ticket was issued: call GetFlightInfo again"
                            .into(),
                    )
                    .into());
                }
                let prepared = self.plan(&bound.sql, &principal, false).await?;
                self.stream_query(id, prepared, bound.params.as_ref())?
            }
        };
        Ok(Response::new(stream))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        if command.transaction_id.is_some() {
            return Err(no_transactions());
        }
        let principal = self.ingest.principal(request.metadata())?;
        let prepared = self.plan(&command.query, &principal, true).await?;
        update(
            self.run_effects_or_refuse(prepared, &principal, None)
                .await?,
        )
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        if query.transaction_id.is_some() {
            return Err(no_transactions());
        }
        let principal = self.ingest.principal(request.metadata())?;
        // Checked now, run when executed.
        let prepared = self.plan(&query.query, &principal, true).await?;
        // An INSERT answers no dataset schema, though executing it as a
        // query answers its count: JDBC (and others) tell an update from
        // a query by an empty dataset schema.
        let dataset = match prepared {
            Prepared::Insert { .. } => Arc::new(Schema::empty()),
            _ => execute::wire_schema(&prepared.result_schema()),
        };
        let parameters = prepared.parameter_schema().map_err(Error::from)?;
        let handle = self.statements.prepare(&principal, query.query)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.to_vec().into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let principal = self.ingest.principal(request.metadata())?;
        Ok(self
            .statements
            .close(&principal, &query.prepared_statement_handle)?)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        let handle = &query.prepared_statement_handle;
        // The statement must exist before its parameters are read.
        self.statements.get(&principal, handle)?;
        let params = self
            .read_params(request.into_inner())
            .await?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::new(Schema::empty())));
        self.statements.bind(&principal, handle, params)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        let handle = &query.prepared_statement_handle;
        let bound = self.statements.get(&principal, handle)?;
        let prepared = self.plan(&bound.sql, &principal, true).await?;
        let (schema, what) = match prepared {
            query @ Prepared::Query { .. } => (
                Self::bound_schema(query, bound.params.as_ref())?,
                Redeems::Prepared {
                    handle: handle.as_ref().try_into().map_err(|_| {
                        Error::Internal("a prepared statement's handle changed size".into())
                    })?,
                    generation: bound.generation,
                },
            ),
            effects => {
                let schema = effects.result_schema();
                let what = self
                    .run_effects(effects, &principal, bound.params.as_ref())
                    .await?;
                (schema, what)
            }
        };
        Ok(Response::new(self.flight_info(
            &schema,
            &what,
            request.into_inner(),
        )?))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        let bound = self
            .statements
            .get(&principal, &query.prepared_statement_handle)?;
        // Parameters sent with the update, else those bound before.
        let params = match self.read_params(request.into_inner()).await? {
            Some(params) => Some(params),
            None => bound.params,
        };
        let prepared = self.plan(&bound.sql, &principal, true).await?;
        update(
            self.run_effects_or_refuse(prepared, &principal, params.as_ref())
                .await?,
        )
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.ingest.principal(request.metadata())?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Error::BadRequest(format!("CancelQuery: not a FlightInfo: {e}")))?;
        // CancelQuery's result numbers its values as CancelFlightInfo's
        // status does.
        Ok(ActionCancelQueryResult {
            result: cancel_status(self.cancel(&info)?) as i32,
        })
    }

    /// `CancelFlightInfo`, a Flight action rather than a FlightSQL one.
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.ingest.principal(request.metadata())?;
        let action = request.into_inner();
        if action.r#type != CANCEL_FLIGHT_INFO {
            return Err(Error::BadRequest(format!(
                "unknown action {:?}",
                weir_codec::EchoText(&action.r#type)
            ))
            .into());
        }
        let info = CancelFlightInfoRequest::decode(action.body)
            .ok()
            .and_then(|request| request.info)
            .ok_or_else(|| Error::BadRequest("CancelFlightInfo: no FlightInfo".into()))?;
        let result = CancelFlightInfoResult {
            status: cancel_status(self.cancel(&info)?) as i32,
        };
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(body)]).boxed()))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.into(),
            description: "Cancel a query: the body is a CancelFlightInfoRequest".into(),
        })])
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
        let schema = metadata::sql_info_schema(&query, &self.sql_info);
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
        Ok(Response::new(metadata::sql_info(query, &self.sql_info)?))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ingest.principal(request.metadata())?;
        let schema = metadata::xdbc_type_info_schema(&query);
        Ok(Response::new(metadata::info(
            &query,
            &schema,
            request.into_inner(),
        )?))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::xdbc_type_info(query)?))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.key_info(&query, metadata::primary_keys_schema(), request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.no_keys(metadata::primary_keys_schema(), &request)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.key_info(&query, metadata::foreign_keys_schema(), request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.no_keys(metadata::foreign_keys_schema(), &request)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.key_info(&query, metadata::foreign_keys_schema(), request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.no_keys(metadata::foreign_keys_schema(), &request)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.key_info(&query, metadata::foreign_keys_schema(), request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.no_keys(metadata::foreign_keys_schema(), &request)
    }
}

impl WeirService {
    /// The `FlightInfo` of a key command: weir's tables have no keys.
    fn key_info(
        &self,
        command: &impl ProstMessageExt,
        schema: arrow::datatypes::SchemaRef,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::info(
            command,
            &schema,
            request.into_inner(),
        )?))
    }

    /// The rows of a key command: none.
    fn no_keys(
        &self,
        schema: arrow::datatypes::SchemaRef,
        request: &Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.ingest.principal(request.metadata())?;
        Ok(Response::new(metadata::no_keys(schema)?))
    }

    /// [`WeirService::run_effects`], refusing a query.
    async fn run_effects_or_refuse(
        &self,
        prepared: Prepared,
        principal: &Principal,
        params: Option<&RecordBatch>,
    ) -> Result<Redeems, Error> {
        if let Prepared::Query { .. } = prepared {
            return Err(Error::BadRequest(
                "a query is not an update: run it with GetFlightInfo".into(),
            ));
        }
        self.run_effects(prepared, principal, params).await
    }
}

/// The affected rows of an update.
fn update(done: Redeems) -> Result<i64, Status> {
    match done {
        Redeems::Inserted(rows) => Ok(i64::try_from(rows).unwrap_or(i64::MAX)),
        _ => Ok(0),
    }
}

fn cancel_status(cancelled: Cancelled) -> CancelStatus {
    match cancelled {
        Cancelled::Running | Cancelled::Before => CancelStatus::Cancelled,
        Cancelled::NotCancellable => CancelStatus::NotCancellable,
    }
}

fn no_transactions() -> Status {
    Error::BadRequest("transactions are not supported: each statement stands alone".into()).into()
}
