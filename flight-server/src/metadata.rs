//! FlightSQL catalog metadata: what BI tools and ADBC's `get_info`,
//! `get_objects`, `get_table_schema` and `get_table_types` ask first.
//!
//! weir has one catalog and one schema, the names SQL resolves
//! (`datafusion.public.<table>`); every table is of type `TABLE`. Filter
//! patterns (SQL `LIKE`) are applied by arrow-flight's builders, which
//! also give each answer the exact schema the protocol defines.
//! `GetTables` lists only the tables the client may read (names and
//! columns remain visible through `information_schema`).

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, ProstMessageExt, SqlInfo, SqlSupportedTransaction,
};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::Status;
use weir_provider::Catalog;

use crate::auth::Principal;

/// The catalog and schema every table is in, as SQL names them.
pub const CATALOG: &str = "datafusion";
pub const SCHEMA: &str = "public";
/// The type of every table.
pub const TABLE_TYPE: &str = "TABLE";

/// The rows of a metadata answer.
pub type DataStream = std::pin::Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send>>;

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "weir");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    // Rows arrive through ingest and DDL runs; the SQL DML statements do not.
    info.append(SqlInfo::FlightSqlServerReadOnly, false);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, true);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.build().expect("weir's SqlInfo values are well-formed")
});

/// The `FlightInfo` of a metadata command: its schema, and one endpoint
/// whose ticket is the command itself.
pub fn info(
    command: &impl ProstMessageExt,
    schema: &arrow::datatypes::Schema,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor))
}

fn one_batch(
    schema: SchemaRef,
    batch: arrow_flight::error::Result<RecordBatch>,
) -> Result<DataStream, Status> {
    let batch = batch.map_err(Status::from)?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(Status::from);
    Ok(stream.boxed())
}

pub fn catalogs_schema(command: &CommandGetCatalogs) -> SchemaRef {
    (*command).into_builder().schema()
}

pub fn catalogs(command: CommandGetCatalogs) -> Result<DataStream, Status> {
    let mut rows = command.into_builder();
    rows.append(CATALOG);
    one_batch(rows.schema(), rows.build())
}

pub fn schemas_schema(command: &CommandGetDbSchemas) -> SchemaRef {
    command.clone().into_builder().schema()
}

pub fn schemas(command: CommandGetDbSchemas) -> Result<DataStream, Status> {
    let mut rows = command.into_builder();
    rows.append(CATALOG, SCHEMA);
    one_batch(rows.schema(), rows.build())
}

pub fn tables_schema(command: &CommandGetTables) -> SchemaRef {
    command.clone().into_builder().schema()
}

/// The tables `principal` may read, with their schemas when asked.
pub fn tables(
    command: CommandGetTables,
    catalog: &Arc<Catalog>,
    principal: &Principal,
) -> Result<DataStream, Status> {
    let mut rows = command.into_builder();
    for name in catalog.table_names() {
        if principal.check_read(&name).is_err() {
            continue;
        }
        // A table dropped since it was listed is left out.
        let Ok(table) = catalog.table(&name) else {
            continue;
        };
        rows.append(CATALOG, SCHEMA, &name, TABLE_TYPE, table.schema())
            .map_err(Status::from)?;
    }
    one_batch(rows.schema(), rows.build())
}

pub fn table_types_schema(command: &CommandGetTableTypes) -> SchemaRef {
    (*command).into_builder().schema()
}

pub fn table_types(command: CommandGetTableTypes) -> Result<DataStream, Status> {
    let mut rows = command.into_builder();
    rows.append(TABLE_TYPE);
    one_batch(rows.schema(), rows.build())
}

pub fn sql_info_schema(command: &CommandGetSqlInfo) -> SchemaRef {
    command.clone().into_builder(&SQL_INFO).schema()
}

pub fn sql_info(command: CommandGetSqlInfo) -> Result<DataStream, Status> {
    let rows = command.into_builder(&SQL_INFO);
    one_batch(rows.schema(), rows.build())
}
