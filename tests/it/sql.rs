//! SQL over committed files and the WAL tail, as text snapshots.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_and_catalog_statements() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    insta::assert_snapshot!(server.sql_text("SHOW TABLES").await, @"
    +------------+
    | table_name |
    +------------+
    | sensors    |
    +------------+
    ");
    insta::assert_snapshot!(server.sql_text("DESCRIBE sensors").await, @r#"
    +-------------+----------------------+-------------+
    | column_name | data_type            | is_nullable |
    +-------------+----------------------+-------------+
    | id          | Int64                | NO          |
    | ts          | Timestamp(µs, "UTC") | YES         |
    | temp        | Float64              | YES         |
    | site        | Utf8                 | YES         |
    +-------------+----------------------+-------------+
    "#);
    server
        .sql("CREATE TABLE IF NOT EXISTS sensors (x INT)")
        .await;
    server.sql("DROP TABLE IF EXISTS nothing_here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_union_delta_and_the_tail_with_filters_and_projection() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    server.push_sensors(0, 6).await;
    server.server().catalog().commit_all().await.unwrap();
    server.push_sensors(6, 6).await;
    let table = server.server().catalog().table("sensors").unwrap();
    assert_eq!(
        table.stats().tail_rows,
        6,
        "half committed, half in the tail"
    );

    insta::assert_snapshot!(
        server.sql_text("SELECT id, ts, temp, site FROM sensors ORDER BY id").await,
        @"
    +----+-----------------------------+------+-------+
    | id | ts                          | temp | site  |
    +----+-----------------------------+------+-------+
    | 0  | 2023-11-14T22:13:20Z        | 0.0  | north |
    | 1  | 2023-11-14T22:13:20.000001Z | 0.5  | south |
    | 2  | 2023-11-14T22:13:20.000002Z | 1.0  | east  |
    | 3  | 2023-11-14T22:13:20.000003Z | 1.5  | north |
    | 4  | 2023-11-14T22:13:20.000004Z | 2.0  | south |
    | 5  | 2023-11-14T22:13:20.000005Z | 2.5  | east  |
    | 6  | 2023-11-14T22:13:20.000006Z | 3.0  | north |
    | 7  | 2023-11-14T22:13:20.000007Z | 3.5  | south |
    | 8  | 2023-11-14T22:13:20.000008Z | 4.0  | east  |
    | 9  | 2023-11-14T22:13:20.000009Z | 4.5  | north |
    | 10 | 2023-11-14T22:13:20.000010Z | 5.0  | south |
    | 11 | 2023-11-14T22:13:20.000011Z | 5.5  | east  |
    +----+-----------------------------+------+-------+
    "
    );
    insta::assert_snapshot!(
        server
            .sql_text("SELECT site, count(*) AS n, max(temp) AS hottest FROM sensors WHERE id % 2 = 0 GROUP BY site ORDER BY site")
            .await,
        @"
    +-------+---+---------+
    | site  | n | hottest |
    +-------+---+---------+
    | east  | 2 | 4.0     |
    | north | 2 | 3.0     |
    | south | 2 | 5.0     |
    +-------+---+---------+
    "
    );
    insta::assert_snapshot!(
        server
            .sql_text("SELECT id FROM sensors WHERE site = 'north' AND id > 2 ORDER BY id LIMIT 3")
            .await,
        @"
    +----+
    | id |
    +----+
    | 3  |
    | 6  |
    | 9  |
    +----+
    "
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_through_flight_sql_statement_update() {
    let server = TestServer::start().await;
    let mut client = server.flight_sql().await;
    let affected = client
        .execute_update(SENSORS_DDL.into(), None)
        .await
        .unwrap();
    assert_eq!(affected, 0);
    assert!(server.sql_text("SHOW TABLES").await.contains("| sensors"));
    let status = to_status(
        client
            .execute_update("SELECT 1".into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = to_status(
        client
            .execute_update(SENSORS_DDL.into(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_metadata_over_flight_sql() {
    use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    server.sql("CREATE TABLE other (k VARCHAR)").await;
    let mut client = server.flight_sql().await;

    let info = client.get_catalogs().await.unwrap();
    insta::assert_snapshot!(info_text(&mut client, info).await, @"
    +--------------+
    | catalog_name |
    +--------------+
    | datafusion   |
    +--------------+
    ");
    let info = client
        .get_db_schemas(CommandGetDbSchemas::default())
        .await
        .unwrap();
    insta::assert_snapshot!(info_text(&mut client, info).await, @"
    +--------------+----------------+
    | catalog_name | db_schema_name |
    +--------------+----------------+
    | datafusion   | public         |
    +--------------+----------------+
    ");
    let tables = CommandGetTables {
        table_name_filter_pattern: Some("s%".into()),
        include_schema: true,
        ..Default::default()
    };
    let info = client.get_tables(tables).await.unwrap();
    let rows = info_text(&mut client, info).await;
    assert!(
        rows.contains("sensors") && !rows.contains("other"),
        "{rows}"
    );
    let info = client.get_table_types().await.unwrap();
    insta::assert_snapshot!(info_text(&mut client, info).await, @"
    +------------+
    | table_type |
    +------------+
    | TABLE      |
    +------------+
    ");
    let info = client
        .get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::SqlDdlTable])
        .await
        .unwrap();
    insta::assert_snapshot!(info_text(&mut client, info).await, @"
    +-----------+---------------------+
    | info_name | value               |
    +-----------+---------------------+
    | 0         | {string_value=weir} |
    | 502       | {bool_value=true}   |
    +-----------+---------------------+
    ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_ticket_runs_nothing() {
    use arrow_flight::Ticket;
    use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
    use prost::Message;
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let mut client = server.flight_sql().await;
    let ticket = |handle: Vec<u8>| {
        let handle = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        Ticket::new(handle.as_any().encode_to_vec())
    };
    // The old unsigned form, a forged signature, and a real handle of a
    // query whose bytes were changed to DDL: none runs.
    let mut forged = b"q1:".to_vec();
    forged.extend([0u8; 32]);
    forged.extend(b"DROP TABLE sensors");
    let info = client
        .execute("SELECT count(*) FROM sensors".into(), None)
        .await
        .unwrap();
    let real = &info.endpoint[0].ticket.as_ref().unwrap().ticket;
    let real: TicketStatementQuery = arrow_flight::sql::Any::decode(real.clone())
        .unwrap()
        .unpack()
        .unwrap()
        .unwrap();
    let mut tampered = real.statement_handle.to_vec();
    let at = tampered.len() - "SELECT count(*) FROM sensors".len();
    tampered.truncate(at);
    tampered.extend(b"DROP TABLE sensors");
    for handle in [b"query:DROP TABLE sensors".to_vec(), forged, tampered] {
        let status = match client.do_get(ticket(handle)).await {
            Ok(_) => panic!("a crafted ticket was answered"),
            Err(e) => to_status(e),
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("forged or expired"), "{status:?}");
    }
    assert_eq!(server.count("sensors").await, 0);
}
