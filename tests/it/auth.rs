//! Authentication and TLS with real clients: the Zerobus Rust SDK getting
//! OAuth tokens from weir's token endpoint, FlightSQL with bearer tokens,
//! every protocol refusing calls without a valid token, and TLS with a CA
//! the test makes.

use std::sync::Arc;

use databricks_zerobus_ingest_sdk::{
    ConnectorFactory, JsonString, TlsConfig, ZerobusError, ZerobusResult, ZerobusSdk,
};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use weir_flight_server::auth::{ClientSection, hash_secret};
use weir_flight_server::{Config, Server};

use crate::support::{SENSORS_DDL, TestServer};

const TABLE: &str = "main.telemetry.sensors";

fn client(id: &str, secret: &str, write: &[&str], read: &[&str], ddl: bool) -> ClientSection {
    ClientSection {
        id: id.into(),
        secret_sha256: hash_secret(secret),
        write: write.iter().map(|t| t.to_string()).collect(),
        read: read.iter().map(|t| t.to_string()).collect(),
        ddl,
    }
}

/// A server with three clients: an admin, a producer of `sensors` and a
/// reader of `sensors`; `sensors` and `other` exist.
async fn server_with_clients() -> TestServer {
    let mut server = TestServer::start_with(|config| {
        config.auth.clients = vec![
            client("admin", "admin-secret", &["*"], &["*"], true),
            client(
                "producer",
                "s3cret",
                &["main.telemetry.sensors"],
                &[],
                false,
            ),
            client("reader", "r3ad", &[], &["sensors"], false),
            client("provisioner", "pr0v", &[], &[], true),
        ];
    })
    .await;
    server.token = Some(token(&server, "admin", "admin-secret").await);
    server.sql(SENSORS_DDL).await;
    server.sql("CREATE TABLE other (id BIGINT NOT NULL)").await;
    server
}

fn token_url(server: &TestServer, scheme: &str) -> String {
    let addr = server.server().token_addr().expect("auth is on");
    format!("{scheme}://{addr}")
}

/// A token from the endpoint, as any OAuth client gets one.
async fn token(server: &TestServer, id: &str, secret: &str) -> String {
    let response = http()
        .post(format!("{}/oidc/v1/token", token_url(server, "http")))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    body["access_token"].as_str().unwrap().to_string()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn sdk(server: &TestServer) -> ZerobusSdk {
    let direct: ConnectorFactory = Arc::new(|_host: &str| None);
    ZerobusSdk::builder()
        .endpoint(server.url())
        .unity_catalog_url(token_url(server, "http"))
        .no_tls()
        .connector_factory(direct)
        .build()
        .unwrap()
}

fn record(id: i64) -> JsonString {
    JsonString(format!(r#"{{"id": {id}, "site": "oauth"}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_gets_tokens_from_weir_and_writes_with_them() {
    let server = server_with_clients().await;
    let sdk = sdk(&server);
    let mut stream = sdk
        .stream_builder()
        .table(TABLE)
        .oauth("producer", "s3cret")
        .json()
        .build()
        .await
        .unwrap();
    stream
        .ingest_records_offset((0..100).map(record))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    stream.close().await.unwrap();

    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
    ]));
    let mut arrow = sdk
        .stream_builder()
        .table(TABLE)
        .oauth("producer", "s3cret")
        .arrow(Arc::clone(&schema))
        .build_arrow()
        .await
        .unwrap();
    let batch = arrow::array::RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int64Array::from_iter_values(
            100..150,
        ))],
    )
    .unwrap();
    arrow.ingest_batch(batch).await.unwrap();
    arrow.flush().await.unwrap();
    arrow.close().await.unwrap();

    let mut persistent = sdk
        .persistent_stream_builder()
        .table(TABLE)
        .oauth("producer", "s3cret")
        .json()
        .build()
        .await
        .unwrap();
    persistent
        .ingest_record_offset(record(150).0)
        .await
        .unwrap();
    persistent.flush().await.unwrap();
    persistent.close().await.unwrap();
    assert_eq!(server.count("sensors").await, 151);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_refuses_a_call_without_a_valid_token() {
    let mut server = server_with_clients().await;
    let sdk = sdk(&server);

    // The token endpoint: an unknown client, a wrong secret, a wrong grant.
    let url = format!("{}/oidc/v1/token", token_url(&server, "http"));
    for (id, secret, grant, status) in [
        ("nobody", "s3cret", "client_credentials", 401),
        ("producer", "wrong", "client_credentials", 401),
        ("producer", "s3cret", "password", 400),
    ] {
        let response = http()
            .post(&url)
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", grant)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{id} {secret} {grant}");
    }
    // ... which the SDK reports and does not retry.
    let err = sdk
        .stream_builder()
        .table(TABLE)
        .oauth("producer", "wrong")
        .json()
        .build()
        .await
        .err()
        .expect("a wrong secret");
    assert!(!err.is_retryable(), "{err:?}");

    // gRPC ingest and Arrow Flight DoPut without a token: UNAUTHENTICATED.
    let err = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .json()
        .build()
        .await
        .err()
        .expect("no token");
    assert_code(&err, Code::Unauthenticated);
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
    ]));
    let err = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .arrow(schema)
        .build_arrow()
        .await
        .err()
        .expect("no token");
    assert_code(&err, Code::Unauthenticated);

    // A token for a table the client may not write: PERMISSION_DENIED.
    let err = sdk
        .stream_builder()
        .table("main.telemetry.other")
        .oauth("producer", "s3cret")
        .json()
        .build()
        .await
        .err()
        .expect("producer may not write other");
    assert_code(&err, Code::PermissionDenied);

    // FlightSQL: no token, a forged one, a table outside the grants, DDL.
    let admin = server.token.take();
    let status = server.try_sql("SELECT 1").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut anonymous = server.flight_sql().await;
    let refused = [
        anonymous.get_catalogs().await.err(),
        anonymous.get_table_types().await.err(),
        anonymous
            .get_tables(arrow_flight::sql::CommandGetTables::default())
            .await
            .err(),
        anonymous.get_sql_info(vec![]).await.err(),
    ];
    for err in refused {
        let status = crate::support::to_status(err.expect("refused"));
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let reader = token(&server, "reader", "r3ad").await;
    server.token = Some(format!("{reader}x"));
    let status = server.try_sql("SELECT 1").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.token = Some(reader);
    assert_eq!(server.count("sensors").await, 0);
    // The catalog lists only what the client may read.
    let mut client = server.flight_sql().await;
    let info = client
        .get_tables(arrow_flight::sql::CommandGetTables::default())
        .await
        .unwrap();
    let mut listed = Vec::new();
    for endpoint in info.endpoint {
        use futures::TryStreamExt;
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        for batch in stream.try_collect::<Vec<_>>().await.unwrap() {
            let names = batch.column_by_name("table_name").unwrap();
            let names = arrow::array::AsArray::as_string::<i32>(names);
            listed.extend(names.iter().flatten().map(str::to_string));
        }
    }
    assert_eq!(listed, vec!["sensors"]);
    let status = server.try_sql("SELECT * FROM other").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("other"), "{status:?}");
    let status = server
        .try_sql("SELECT s.id FROM sensors s JOIN other o ON s.id = o.id")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = server.try_sql("DROP TABLE other").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // A CTE named like the table does not reach it: refused either as a
    // read or by the planner, never answered.
    let status = server
        .try_sql("WITH RECURSIVE other AS (SELECT * FROM other) SELECT * FROM other")
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::PermissionDenied | Code::InvalidArgument
        ),
        "{status:?}"
    );
    let status = server
        .try_sql("CREATE TABLE copied AS SELECT * FROM other")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // DDL needs the ddl grant and nothing more.
    server.token = Some(token(&server, "provisioner", "pr0v").await);
    server.sql("CREATE TABLE made (id BIGINT)").await;
    let status = server.try_sql("SELECT * FROM made").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // INSERT needs the write grant on its table, and the read grant on
    // what it selects from.
    let status = server
        .try_sql("INSERT INTO sensors (id) VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    server.token = Some(token(&server, "producer", "s3cret").await);
    server.sql("INSERT INTO sensors (id) VALUES (1)").await;
    let status = server
        .try_sql("INSERT INTO sensors (id) SELECT id FROM other")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("other"), "{status:?}");

    // Nothing else was written or dropped; a restarted node still takes the
    // tokens it minted.
    server.token = admin;
    server.restart_on_same_port().await;
    assert_eq!(server.count("sensors").await, 1, "the producer's INSERT");
    assert_eq!(server.count("other").await, 0);
}

fn assert_code(err: &ZerobusError, code: Code) {
    let status = match err {
        ZerobusError::CreateStreamError(status) | ZerobusError::StreamClosedError(status) => status,
        other => panic!("expected {code:?}, got {other:?}"),
    };
    assert_eq!(status.code(), code, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_listens_only_on_loopback_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Config::for_tests(dir.path())
    };
    let err = Server::start(config).await.unwrap_err().to_string();
    assert!(err.contains("without authentication"), "{err}");
    assert!(err.contains("--allow-unauthenticated"), "{err}");
}

/// The SDK's TLS settings for a server whose certificate `ca` signed.
struct TestCa(String);

impl TlsConfig for TestCa {
    fn configure_endpoint(&self, endpoint: Endpoint) -> ZerobusResult<Endpoint> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.0))
            .domain_name("localhost");
        endpoint
            .tls_config(tls)
            .map_err(|e| ZerobusError::ChannelCreationError(e.to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_of_the_tests_own() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (pki.path().join("server.pem"), pki.path().join("server.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let server = server_with_clients_over_tls(cert_file, key_file).await;
    let direct: ConnectorFactory = Arc::new(|_host: &str| None);
    let addr = server.server().addr();
    let sdk = ZerobusSdk::builder()
        .endpoint(format!("https://{addr}"))
        .tls_config(Arc::new(TestCa(ca.pem())))
        .connector_factory(direct)
        .build()
        .unwrap();
    // A token from the https endpoint, trusted through the test CA.
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", server.server().token_addr().unwrap())
        .build()
        .unwrap();
    let port = server.server().token_addr().unwrap().port();
    let response = https
        .post(format!("https://localhost:{port}/oidc/v1/token"))
        .basic_auth("producer", Some("s3cret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    let bearer: Arc<dyn databricks_zerobus_ingest_sdk::HeadersProvider> =
        Arc::new(Bearer(token.clone()));
    let mut stream = sdk
        .stream_builder()
        .table(TABLE)
        .headers_provider(bearer)
        .json()
        .build()
        .await
        .unwrap();
    stream
        .ingest_records_offset((0..10).map(record))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    stream.close().await.unwrap();

    // The rows through weir-client's FlightSQL API (the one `weir sql`
    // uses) over TLS, with the token; without the CA, or over plaintext,
    // it does not connect.
    let options = weir_client::ConnectOptions {
        token: Some(token.clone()),
        ca_pem: Some(ca.pem().into_bytes()),
    };
    let url = format!("https://localhost:{}", addr.port());
    let mut sql = weir_client::SqlClient::connect(&url, &options)
        .await
        .unwrap();
    let rows = sql.query("SELECT count(*) FROM sensors").await.unwrap();
    let rows = rows.collect().await.unwrap();
    let count = rows[0].column(0).as_any();
    let count = count.downcast_ref::<arrow::array::Int64Array>().unwrap();
    assert_eq!(count.value(0), 10);
    let tables = sql.tables().await.unwrap();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].name, "sensors");
    assert_eq!(tables[0].columns.field(0).name(), "id");
    let untrusted = weir_client::ConnectOptions {
        ca_pem: None,
        ..options.clone()
    };
    let refused = match weir_client::SqlClient::connect(&url, &untrusted).await {
        Err(_) => true,
        Ok(mut sql) => sql.query("SELECT 1").await.is_err(),
    };
    assert!(refused, "the server's CA is not the system's");

    // Plaintext to a TLS port does not get through.
    let plain = ZerobusSdk::builder()
        .endpoint(format!("http://{addr}"))
        .no_tls()
        .connector_factory(Arc::new(|_host: &str| None))
        .build()
        .unwrap();
    let failed = plain
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .json()
        .recovery(false)
        .build()
        .await;
    assert!(failed.is_err());
}

/// A fixed bearer token, as a custom headers provider sends it.
struct Bearer(String);

#[async_trait::async_trait]
impl databricks_zerobus_ingest_sdk::HeadersProvider for Bearer {
    async fn get_headers(&self) -> ZerobusResult<std::collections::HashMap<&'static str, String>> {
        Ok(std::collections::HashMap::from([
            ("authorization", format!("Bearer {}", self.0)),
            ("x-databricks-zerobus-table-name", TABLE.to_string()),
        ]))
    }
}

async fn server_with_clients_over_tls(
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
) -> TestServer {
    let server = TestServer::start_with(|config| {
        config.auth.clients = vec![client(
            "producer",
            "s3cret",
            &["main.telemetry.sensors"],
            &["sensors"],
            true,
        )];
        config.tls.cert_file = Some(cert_file);
        config.tls.key_file = Some(key_file);
    })
    .await;
    // The table, created in process: the test's SQL client speaks
    // plaintext.
    server
        .server()
        .catalog()
        .create_table("sensors", &crate::support::sensors_schema(), false)
        .await
        .unwrap();
    server
}
