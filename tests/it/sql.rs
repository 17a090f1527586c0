//! SQL over committed files and the WAL tail, as text snapshots.

use weir_client::StreamOptions;

use crate::support::*;

async fn push(server: &TestServer, first: i64, rows: usize) {
    let client = server.client().await;
    let mut stream = client
        .open_stream("sensors", sensors_schema(), StreamOptions::default())
        .await
        .unwrap();
    stream.send(sensor_batch(first, rows)).await.unwrap();
    stream.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_and_catalog_statements() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    insta::assert_snapshot!(server.sql_text("SHOW TABLES").await, @"");
    insta::assert_snapshot!(server.sql_text("DESCRIBE sensors").await, @"");
    server
        .sql("CREATE TABLE IF NOT EXISTS sensors (x INT)")
        .await;
    server.sql("DROP TABLE IF EXISTS nothing_here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_union_delta_and_the_tail_with_filters_and_projection() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    push(&server, 0, 6).await;
    server.server().catalog().commit_all().await.unwrap();
    push(&server, 6, 6).await;
    let table = server.server().catalog().table("sensors").unwrap();
    assert_eq!(
        table.stats().tail_rows,
        6,
        "half committed, half in the tail"
    );

    insta::assert_snapshot!(
        server.sql_text("SELECT id, ts, temp, site FROM sensors ORDER BY id").await,
        @""
    );
    insta::assert_snapshot!(
        server
            .sql_text("SELECT site, count(*) AS n, max(temp) AS hottest FROM sensors WHERE id % 2 = 0 GROUP BY site ORDER BY site")
            .await,
        @""
    );
    insta::assert_snapshot!(
        server
            .sql_text("SELECT id FROM sensors WHERE site = 'north' AND id > 2 ORDER BY id LIMIT 3")
            .await,
        @""
    );
}
