//! FlightSQL catalog metadata: what BI tools and ADBC's `get_info`,
//! `get_objects`, `get_table_schema` and `get_table_types` ask first.
//!
//! weir has one catalog and one schema, the names SQL resolves
//! (`datafusion.public.<table>`); every table is of type `TABLE`. Filter
//! patterns (SQL `LIKE`) are applied by arrow-flight's builders, which
//! also give each answer the exact schema the protocol defines.
//! `GetTables` lists only the tables the client may read (names and
//! columns remain visible through `information_schema`). weir has no
//! primary or foreign keys: the key commands answer no rows, with the
//! schema the protocol defines. `GetXdbcTypeInfo` lists the SQL types a
//! table column can have (the README's "SQL types").

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, Nullable, ProstMessageExt, Searchable, SqlInfo,
    SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
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

/// What `GetSqlInfo` answers, for a server whose queries stop after
/// `query_timeout`.
pub fn sql_info_data(query_timeout: Option<Duration>) -> SqlInfoData {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "weir");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    // Rows arrive through ingest and `INSERT`; DDL runs.
    info.append(SqlInfo::FlightSqlServerReadOnly, false);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, true);
    // In milliseconds; 0 for none.
    info.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        query_timeout.map_or(0, |limit| {
            i32::try_from(limit.as_millis()).unwrap_or(i32::MAX)
        }),
    );
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, true);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.build().expect("weir's SqlInfo values are well-formed")
}

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

pub(crate) fn one_batch(
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

pub fn sql_info_schema(command: &CommandGetSqlInfo, info: &SqlInfoData) -> SchemaRef {
    command.clone().into_builder(info).schema()
}

pub fn sql_info(command: CommandGetSqlInfo, info: &SqlInfoData) -> Result<DataStream, Status> {
    let rows = command.into_builder(info);
    one_batch(rows.schema(), rows.build())
}

static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    use XdbcDataType as X;
    let quoted = |name: &str, data_type, prefix: &str| XdbcTypeInfo {
        literal_prefix: Some(prefix.into()),
        literal_suffix: Some("'".into()),
        case_sensitive: true,
        searchable: Searchable::Full,
        ..plain(name, data_type)
    };
    let number = |name: &str, data_type, precision: i32| XdbcTypeInfo {
        column_size: Some(precision),
        unsigned_attribute: Some(false),
        num_prec_radix: Some(
            if matches!(data_type, X::XdbcFloat | X::XdbcDouble | X::XdbcReal) {
                2
            } else {
                10
            },
        ),
        ..plain(name, data_type)
    };
    let mut infos = vec![
        number("TINYINT", X::XdbcTinyint, 3),
        number("BIGINT", X::XdbcBigint, 19),
        quoted("BYTEA", X::XdbcVarbinary, "X'"),
        quoted("VARCHAR", X::XdbcVarchar, "'"),
        XdbcTypeInfo {
            column_size: Some(38),
            create_params: Some(vec!["precision".into(), "scale".into()]),
            fixed_prec_scale: true,
            minimum_scale: Some(0),
            maximum_scale: Some(38),
            ..number("DECIMAL", X::XdbcDecimal, 38)
        },
        number("INT", X::XdbcInteger, 10),
        number("SMALLINT", X::XdbcSmallint, 5),
        number("REAL", X::XdbcReal, 24),
        number("DOUBLE", X::XdbcDouble, 53),
        XdbcTypeInfo {
            // 1, the protocol's XDBC_SUBCODE_DATE: an alias of YEAR,
            // which prost keeps in its place.
            datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            sql_data_type: X::XdbcDatetime,
            ..quoted("DATE", X::XdbcDate, "DATE '")
        },
        XdbcTypeInfo {
            datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            sql_data_type: X::XdbcDatetime,
            maximum_scale: Some(6),
            ..quoted("TIMESTAMP", X::XdbcTimestamp, "TIMESTAMP '")
        },
        plain("BOOLEAN", X::XdbcBit),
    ];
    // Ordered by type number, then name, as the protocol asks.
    infos.sort_by(|a, b| {
        (a.data_type as i32, &a.type_name).cmp(&(b.data_type as i32, &b.type_name))
    });
    let mut types = XdbcTypeInfoDataBuilder::new();
    for info in infos {
        types.append(info);
    }
    types.build().expect("weir's type info is well-formed")
});

/// A type that is nullable, searchable with any operator but `LIKE`, and
/// has no literal quotes.
fn plain(name: &str, data_type: XdbcDataType) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        nullable: Nullable::NullabilityNullable,
        searchable: Searchable::Basic,
        local_type_name: Some(name.into()),
        sql_data_type: data_type,
        ..XdbcTypeInfo::default()
    }
}

pub fn xdbc_type_info_schema(command: &CommandGetXdbcTypeInfo) -> SchemaRef {
    (*command).into_builder(&XDBC_TYPES).schema()
}

pub fn xdbc_type_info(command: CommandGetXdbcTypeInfo) -> Result<DataStream, Status> {
    let rows = command.into_builder(&XDBC_TYPES);
    one_batch(rows.schema(), rows.build())
}

/// The schema of `GetPrimaryKeys`.
pub fn primary_keys_schema() -> SchemaRef {
    let text = |name, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("catalog_name", true),
        text("db_schema_name", true),
        text("table_name", false),
        text("column_name", false),
        text("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The schema of `GetExportedKeys`, `GetImportedKeys` and
/// `GetCrossReference`.
pub fn foreign_keys_schema() -> SchemaRef {
    let text = |name, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// An empty result with `schema`: weir's tables have no keys, and a
/// statement that returns no rows still sends its schema.
pub fn no_keys(schema: SchemaRef) -> Result<DataStream, Status> {
    one_batch(Arc::clone(&schema), Ok(RecordBatch::new_empty(schema)))
}
