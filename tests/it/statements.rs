//! FlightSQL statements with the Rust `FlightSqlServiceClient`: prepared
//! statements, DDL that runs once, `INSERT` through the WAL, the key and
//! type commands, cancel and the query timeout, and the error codes.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetXdbcTypeInfo,
};
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

/// A query that runs for minutes unless stopped.
const ENDLESS: &str = "SELECT sum(value % 7) AS s FROM generate_series(1, 100000000000)";

fn params(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn int64s(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_query_runs_again_with_new_parameters_until_closed() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    server.push_sensors(0, 100).await;
    let mut client = server.flight_sql().await;

    let mut statement = client
        .prepare(
            "SELECT count(*) AS n FROM sensors WHERE id < $1 AND site = $2".into(),
            None,
        )
        .await
        .unwrap();
    let parameters = statement.parameter_schema().unwrap();
    assert_eq!(
        parameters
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect::<Vec<_>>(),
        [("$1", DataType::Int64), ("$2", DataType::Utf8)]
    );
    assert_eq!(statement.dataset_schema().unwrap().field(0).name(), "n");

    // Row i is at site ["north", "south", "east"][i % 3]; see `sensor_batch`.
    let sites = |names: &[&str]| Arc::new(StringArray::from(names.to_vec())) as ArrayRef;
    for (below, expected) in [(10, "4"), (50, "17")] {
        statement
            .set_parameters(params(vec![
                ("$1", int64s(&[below])),
                ("$2", sites(&["north"])),
            ]))
            .unwrap();
        let info = statement.execute().await.unwrap();
        let text = info_text(&mut client, info).await;
        assert!(text.contains(&format!("| {expected} ")), "{below}: {text}");
    }
    // Several rows of parameters: one result after another.
    statement
        .set_parameters(params(vec![
            ("$1", int64s(&[10, 10, 50])),
            ("$2", sites(&["north", "south", "east"])),
        ]))
        .unwrap();
    let info = statement.execute().await.unwrap();
    insta::assert_snapshot!(info_text(&mut client, info).await, @"
    +----+
    | n  |
    +----+
    | 4  |
    | 3  |
    | 16 |
    +----+
    ");
    // A value of the wrong type is refused, naming the parameter.
    statement
        .set_parameters(params(vec![
            ("$1", Arc::new(StringArray::from(vec!["ten"])) as ArrayRef),
            ("$2", sites(&["north"])),
        ]))
        .unwrap();
    let status = to_status(statement.execute().await.unwrap_err());
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("parameter $1"), "{status:?}");

    statement.close().await.unwrap();
    // A closed statement is gone.
    let status = execute_handle(&mut client, handle_of_closed(&server).await).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("closed"), "{status:?}");
}

/// The handle of a prepared statement of `sql`.
async fn statement_handle(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<u8> {
    use arrow_flight::sql::{ActionCreatePreparedStatementRequest, ProstMessageExt};
    let request = ActionCreatePreparedStatementRequest {
        query: sql.into(),
        transaction_id: None,
    };
    let action = Action::new("CreatePreparedStatement", request.as_any().encode_to_vec());
    let result = client
        .do_action(action)
        .await
        .unwrap()
        .message()
        .await
        .unwrap()
        .unwrap();
    let any = arrow_flight::sql::Any::decode(result.body).unwrap();
    let created: arrow_flight::sql::ActionCreatePreparedStatementResult =
        any.unpack().unwrap().unwrap();
    created.prepared_statement_handle.to_vec()
}

/// A handle that was prepared and then closed.
async fn handle_of_closed(server: &TestServer) -> Vec<u8> {
    use arrow_flight::sql::{ActionClosePreparedStatementRequest, ProstMessageExt};
    let mut client = server.flight_sql().await;
    let handle = statement_handle(&mut client, "SELECT 1").await;
    let close = ActionClosePreparedStatementRequest {
        prepared_statement_handle: handle.clone().into(),
    };
    let action = Action::new("ClosePreparedStatement", close.as_any().encode_to_vec());
    client
        .do_action(action)
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    handle
}

/// Executes the prepared statement `handle` as a query; its error.
async fn execute_handle(
    client: &mut FlightSqlServiceClient<Channel>,
    handle: Vec<u8>,
) -> tonic::Status {
    use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: handle.into(),
    };
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    match client.inner_mut().get_flight_info(descriptor).await {
        Ok(info) => panic!("a closed statement ran: {info:?}"),
        Err(status) => status,
    }
}

async fn tables(server: &TestServer) -> String {
    server.sql_text("SHOW TABLES").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_runs_once_when_executed_never_when_prepared_or_fetched() {
    let server = TestServer::start().await;
    let mut client = server.flight_sql().await;
    let mut create = client
        .prepare("CREATE TABLE made (id BIGINT)".into(), None)
        .await
        .unwrap();
    assert!(create.dataset_schema().unwrap().fields().is_empty());
    assert!(!tables(&server).await.contains("made"), "prepared, not run");
    assert_eq!(create.execute_update().await.unwrap(), 0);
    assert!(tables(&server).await.contains("made"));
    // Run again, it is a second CREATE TABLE.
    let status = to_status(create.execute_update().await.unwrap_err());
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    // Executed as a query, DDL runs in GetFlightInfo; its ticket holds
    // only the outcome, so fetching it twice, after the table is gone,
    // creates nothing.
    let info = client
        .execute("CREATE TABLE again (id BIGINT)".into(), None)
        .await
        .unwrap();
    assert!(tables(&server).await.contains("again"));
    server.sql("DROP TABLE again").await;
    for _ in 0..2 {
        let rows = info_rows(&mut client, info.clone()).await.unwrap();
        assert!(rows.iter().all(|b| b.num_rows() == 0), "{rows:?}");
    }
    assert!(!tables(&server).await.contains("again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_writes_through_the_wal_durable_and_visible_at_once() {
    let mut server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let mut client = server.flight_sql().await;

    let added = client
        .execute_update(
            "INSERT INTO sensors (site, id) VALUES ('a', 1), ('b', 2)".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(added, 2);
    assert_eq!(server.count("sensors").await, 2, "visible when it returns");
    // As a query, the ticket answers the count.
    let info = client
        .execute(
            "INSERT INTO sensors SELECT id + 10, ts, temp, site FROM sensors".into(),
            None,
        )
        .await
        .unwrap();
    insta::assert_snapshot!(info_text(&mut client, info).await, @"
    +-------+
    | count |
    +-------+
    | 2     |
    +-------+
    ");
    // Many rows of parameters: one write of all of them (executemany).
    let mut insert = client
        .prepare(
            "INSERT INTO sensors (id, site) VALUES ($1, $2)".into(),
            None,
        )
        .await
        .unwrap();
    insert
        .set_parameters(params(vec![
            ("$1", int64s(&[100, 101, 102])),
            (
                "$2",
                Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
            ),
        ]))
        .unwrap();
    assert_eq!(insert.execute_update().await.unwrap(), 3);
    assert_eq!(server.count("sensors").await, 7);

    // The table's rules: a NULL in a NOT NULL column, a value of the wrong
    // type. Nothing of a refused INSERT is written, even rows before the
    // bad one.
    for (sql, says) in [
        ("INSERT INTO sensors (site) VALUES ('no id')", "\"id\""),
        (
            "INSERT INTO sensors (id) VALUES (5), (NULL)",
            "non-nullable",
        ),
        ("INSERT INTO sensors (id) VALUES ('five')", "five"),
        ("INSERT INTO nowhere (id) VALUES (1)", "nowhere"),
        ("UPDATE sensors SET site = 'x'", "UPDATE"),
    ] {
        let status = to_status(client.execute_update(sql.into(), None).await.unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
        assert!(status.message().contains(says), "{sql}: {status:?}");
    }
    assert_eq!(server.count("sensors").await, 7);

    // Durable: the rows are in the WAL, and come back after a restart.
    server.restart().await;
    assert_eq!(server.count("sensors").await, 7);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors WHERE site IN ('x', 'y', 'z')")
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_type_commands_answer_with_their_schemas() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let mut client = server.flight_sql().await;

    let table = || ("sensors".to_string(), Some("datafusion".to_string()));
    let (name, catalog) = table();
    let infos = [
        client
            .get_primary_keys(CommandGetPrimaryKeys {
                catalog: catalog.clone(),
                db_schema: None,
                table: name.clone(),
            })
            .await
            .unwrap(),
        client
            .get_exported_keys(CommandGetExportedKeys {
                catalog: catalog.clone(),
                db_schema: None,
                table: name.clone(),
            })
            .await
            .unwrap(),
        client
            .get_imported_keys(CommandGetImportedKeys {
                catalog: catalog.clone(),
                db_schema: None,
                table: name.clone(),
            })
            .await
            .unwrap(),
        client
            .get_cross_reference(CommandGetCrossReference {
                pk_catalog: catalog.clone(),
                pk_db_schema: None,
                pk_table: name.clone(),
                fk_catalog: catalog,
                fk_db_schema: None,
                fk_table: name,
            })
            .await
            .unwrap(),
    ];
    for (i, info) in infos.into_iter().enumerate() {
        let announced = info.clone().try_decode_schema().unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let mut stream = client.do_get(ticket).await.unwrap();
        let mut rows = 0;
        while let Some(batch) = stream.try_next().await.unwrap() {
            rows += batch.num_rows();
        }
        assert_eq!(rows, 0);
        let sent = stream.schema().expect("the schema is sent with no rows");
        assert_eq!(**sent, announced);
        let first = if i == 0 {
            "catalog_name"
        } else {
            "pk_catalog_name"
        };
        assert_eq!(sent.field(0).name(), first);
    }

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let rows = info_rows(&mut client, info).await.unwrap();
    let rows = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    let names = rows.column_by_name("type_name").unwrap();
    let names: Vec<_> = arrow::array::AsArray::as_string::<i32>(names)
        .iter()
        .flatten()
        .collect();
    for declared in ["BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMP", "BOOLEAN"] {
        assert!(names.contains(&declared), "{names:?}");
    }
    // One type asked for by its number: BIGINT is -5.
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo {
            data_type: Some(-5),
        })
        .await
        .unwrap();
    let text = info_text(&mut client, info).await;
    assert!(
        text.contains("BIGINT") && !text.contains("VARCHAR"),
        "{text}"
    );
}

fn cancel_action(info: &arrow_flight::FlightInfo) -> Action {
    let request = CancelFlightInfoRequest {
        info: Some(info.clone()),
    };
    Action::new("CancelFlightInfo", request.encode_to_vec())
}

async fn cancel(
    client: &mut FlightSqlServiceClient<Channel>,
    info: &arrow_flight::FlightInfo,
) -> i32 {
    let result = client
        .do_action(cancel_action(info))
        .await
        .unwrap()
        .message()
        .await
        .unwrap()
        .unwrap();
    CancelFlightInfoResult::decode(result.body).unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_query_and_one_not_yet_fetched() {
    let server = TestServer::start().await;
    let mut client = server.flight_sql().await;

    let info = client.execute(ENDLESS.into(), None).await.unwrap();
    let mut reader = server.flight_sql().await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let running = tokio::spawn(async move {
        let stream = reader.do_get(ticket).await.map_err(to_status)?;
        stream.try_collect::<Vec<_>>().await.map_err(to_status)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cancel(&mut client, &info).await,
        CancelStatus::Cancelled as i32
    );
    let status = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the query stopped")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");

    // Cancelled before it is fetched, it never starts.
    let info = client.execute(ENDLESS.into(), None).await.unwrap();
    assert_eq!(
        cancel(&mut client, &info).await,
        CancelStatus::Cancelled as i32
    );
    let status = info_rows(&mut client, info.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    // The server is fine and answers the next query.
    assert_eq!(server.scalar("SELECT 41 + 1").await, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_timeout_stops_with_deadline_exceeded() {
    let server = TestServer::start_with(|config| config.limits.query_timeout_ms = 500).await;
    let status = server.try_sql(ENDLESS).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("limits.query_timeout_ms"),
        "{status:?}"
    );
    assert_eq!(server.scalar("SELECT 41 + 1").await, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_name_the_problem_with_their_codes() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    for (sql, code, says) in [
        ("SELEC 1", Code::InvalidArgument, "SELEC"),
        ("SELECT * FROM nowhere", Code::InvalidArgument, "nowhere"),
        (
            "SELECT nothing FROM sensors",
            Code::InvalidArgument,
            "nothing",
        ),
        (
            "CREATE TABLE sensors (id BIGINT)",
            Code::AlreadyExists,
            "sensors",
        ),
        ("DROP TABLE nowhere", Code::NotFound, "nowhere"),
    ] {
        let status = server.try_sql(sql).await.unwrap_err();
        assert_eq!(status.code(), code, "{sql}: {status:?}");
        assert!(status.message().contains(says), "{sql}: {status:?}");
    }
    // The same through a prepared statement.
    let mut client = server.flight_sql().await;
    let status = to_status(
        client
            .prepare("SELECT nothing FROM sensors".into(), None)
            .await
            .expect_err("refused"),
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("nothing"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_ingest_creates_then_appends_and_is_visible_when_it_returns() {
    use arrow_flight::sql::{
        CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
    };
    let server = TestServer::start().await;
    let mut client = server.flight_sql().await;
    let ingest =
        |if_not_exist: TableNotExistOption, if_exists: TableExistsOption| CommandStatementIngest {
            table_definition_options: Some(TableDefinitionOptions {
                if_not_exist: if_not_exist as i32,
                if_exists: if_exists as i32,
            }),
            table: "readings".into(),
            ..Default::default()
        };
    let batches = |first: i64| {
        futures::stream::iter([Ok(sensor_batch(first, 5)), Ok(sensor_batch(first + 5, 5))])
    };
    let created = client
        .execute_ingest(
            ingest(TableNotExistOption::Create, TableExistsOption::Fail),
            batches(0),
        )
        .await
        .unwrap();
    assert_eq!(created, 10);
    assert_eq!(
        server.count("readings").await,
        10,
        "visible when it returns"
    );
    let appended = client
        .execute_ingest(
            ingest(TableNotExistOption::Fail, TableExistsOption::Append),
            batches(10),
        )
        .await
        .unwrap();
    assert_eq!(appended, 10);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM readings")
            .await,
        20
    );
    // Creating it again fails, and adds nothing.
    let err = client
        .execute_ingest(
            ingest(TableNotExistOption::Create, TableExistsOption::Fail),
            batches(20),
        )
        .await
        .unwrap_err();
    assert_eq!(to_status(err).code(), Code::AlreadyExists);
    assert_eq!(server.count("readings").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_acks_what_it_decodes_keeps_nothing_and_refuses_insert() {
    let server = TestServer::start_with(|config| config.sink = true).await;
    server.sql(SENSORS_DDL).await;
    let mut stream = server.sensors_stream().await;
    stream.send(sensor_batch(0, 10)).await.unwrap();
    let ack = stream.close().await.unwrap();
    assert_eq!((ack.offset, ack.records), (0, 10), "acked once decoded");
    assert_eq!(server.count("sensors").await, 0, "and kept nowhere");
    let status = server
        .try_sql("INSERT INTO sensors (id) VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("--sink"), "{status:?}");
    // What does not fit the table is still refused.
    let mut stream = server.sensors_stream().await;
    let bad = RecordBatch::try_from_iter([("id", int64s(&[1]))]).unwrap();
    let _ = stream.send(bad).await;
    assert!(stream.close().await.is_err());
}
