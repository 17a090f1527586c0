//! A server in this process on an ephemeral loopback port, and clients.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tempfile::TempDir;
use tonic::transport::Channel;
use weir_flight_server::{Config, Server};

pub const SENSORS_DDL: &str =
    "CREATE TABLE sensors (id BIGINT NOT NULL, ts TIMESTAMP, temp DOUBLE, site VARCHAR)";

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: TempDir,
    /// What the server starts with (and restarts with).
    pub config: Config,
    /// The bearer token SQL calls send, when authentication is on.
    pub token: Option<String>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server with `configure` applied to the test config.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path());
        configure(&mut config);
        let server = Server::start(config.clone()).await.unwrap();
        Self {
            server: Some(server),
            dir,
            config,
            token: None,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server().addr())
    }

    /// Stops cleanly and starts again on the same data directory.
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
        let server = Server::start(self.config.clone()).await.unwrap();
        self.server = Some(server);
    }

    /// Stops cleanly and starts again on the same data directory and ports,
    /// so that clients reconnect to the same addresses.
    pub async fn restart_on_same_port(&mut self) {
        let addr = self.server().addr();
        let token_addr = self.server().token_addr();
        self.server.take().unwrap().shutdown().await.unwrap();
        let mut config = self.config.clone();
        config.listen = addr;
        config.auth.token_listen = token_addr;
        self.server = Some(Server::start(config).await.unwrap());
    }

    pub async fn flight_sql(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        if let Some(token) = &self.token {
            client.set_token(token.clone());
        }
        client
    }

    /// Runs a statement over FlightSQL and returns its rows.
    pub async fn try_sql(&self, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        let mut client = self.flight_sql().await;
        let info = client
            .execute(sql.to_string(), None)
            .await
            .map_err(to_status)?;
        info_rows(&mut client, info).await
    }

    pub async fn sql(&self, sql: &str) -> Vec<RecordBatch> {
        self.try_sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The rows of a query as a text table.
    pub async fn sql_text(&self, sql: &str) -> String {
        pretty_format_batches(&self.sql(sql).await)
            .unwrap()
            .to_string()
    }

    /// A single BIGINT result.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let batches = self.sql(sql).await;
        let column = batches[0].column(0);
        column
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap_or_else(|| panic!("{sql} returned {:?}", column.data_type()))
            .value(0)
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM {table}")).await
    }

    pub async fn client(&self) -> weir_client::Client {
        weir_client::Client::connect(&self.url()).await.unwrap()
    }

    /// A producer stream of sensor rows into `sensors`.
    /// Pushes `sensor_batch(first, rows)` on a stream of its own and
    /// closes it once acked.
    pub async fn push_sensors(&self, first: i64, rows: usize) {
        let mut stream = self.sensors_stream().await;
        stream.send(sensor_batch(first, rows)).await.unwrap();
        stream.close().await.unwrap();
    }

    pub async fn sensors_stream(&self) -> weir_client::Stream {
        self.client()
            .await
            .open_stream("sensors", sensors_schema(), Default::default())
            .await
            .unwrap()
    }

    pub fn table_url(&self, table: &str) -> url::Url {
        url::Url::from_directory_path(self.dir.path().join("tables").join(table)).unwrap()
    }
}

/// The rows of every endpoint of `info` as a text table, read with the
/// Rust FlightSQL client.
pub async fn info_text(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> String {
    pretty_format_batches(&info_rows(client, info).await.unwrap())
        .unwrap()
        .to_string()
}

/// The rows of every endpoint of `info`.
pub async fn info_rows(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client
            .do_get(endpoint.ticket.unwrap())
            .await
            .map_err(to_status)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(to_status)?);
    }
    Ok(batches)
}

pub fn to_status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// The schema a producer of `sensors` uses.
pub fn sensors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("temp", DataType::Float64, true),
        Field::new("site", DataType::Utf8, true),
    ]))
}

/// `rows` sensor rows with ids `first..first + rows`.
pub fn sensor_batch(first: i64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    RecordBatch::try_new(
        sensors_schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(
                TimestampMicrosecondArray::from(
                    ids.iter()
                        .map(|i| 1_700_000_000_000_000 + i)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| (*i % 40) as f64 / 2.0)
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| Some(["north", "south", "east"][(*i % 3) as usize]))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// A TCP proxy in front of a server that can hold back what the server
/// sends (its acks) and cut every connection: a network that loses acks.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, held) = tokio::sync::watch::channel(false);
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = Arc::clone(&connections);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                client.set_nodelay(true).unwrap();
                server.set_nodelay(true).unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut held = held.clone();
                let downstream = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 || held.wait_for(|hold| !*hold).await.is_err() {
                            break;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tasks.lock().unwrap().extend([upstream, downstream]);
            }
        });
        Self {
            addr,
            hold,
            connections,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops passing on what the server sends.
    pub fn hold_responses(&self) {
        self.hold.send_replace(true);
    }

    /// Drops every connection (what was held back is lost) and passes
    /// everything on again for new ones.
    pub fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
        self.hold.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
