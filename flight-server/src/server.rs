//! Starting and stopping a node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tracing::{info, warn};
use weir_provider::Catalog;

use crate::auth::Auth;
use crate::node::{DataDirLock, node_id};
use crate::tls::{Conn, Tls};
use crate::token_endpoint;
use crate::zerobus::ZerobusService;
use crate::{Config, Error, Result, WeirService};

/// Room for a message's framing (IPC header, app_metadata) beyond the
/// request bytes the limits allow.
const MESSAGE_FRAMING_BYTES: usize = 1 << 20;

/// Query results are sent in messages of at most this size.
const MAX_ENCODING_MESSAGE_BYTES: usize = 256 << 20;

/// The largest HTTP/2 frame the server accepts (`SETTINGS_MAX_FRAME_SIZE`;
/// HTTP/2's default is 16 KiB). A producer's request of about a megabyte
/// then arrives in one or a few DATA frames instead of some seventy, and
/// each frame costs the server a pass through h2 and tonic: the transport
/// alone (`weir serve --sink`, 64 NEOWISE streams) acked 704-740 MB/s with
/// 16 KiB frames and 997-1,064 with 1 MiB, at 1.06 server CPU seconds a
/// GB against 1.5 (256 KiB: 965-995; 4 MiB: no more).
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// A running node.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    token_addr: Option<SocketAddr>,
    catalog: Arc<Catalog>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<Result<()>>,
    _lock: DataDirLock,
}

impl Server {
    /// Locks the data directory, replays the WAL, loads the tables, starts
    /// the committers and listens.
    pub async fn start(config: Config) -> Result<Self> {
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let node = node_id(&config.data_dir)?;
        let storage = config.storage_url()?;
        info!(data_dir = %config.data_dir.display(), storage = %storage, node = %node, "starting");

        let auth = Auth::new(&config.auth, &config.data_dir)?.map(Arc::new);
        if auth.is_none() {
            if !config.listen.ip().is_loopback() && !config.auth.allow_unauthenticated {
                return Err(Error::Config(format!(
                    "refusing to listen on {} without authentication: configure \
                     [[auth.clients]], or pass --allow-unauthenticated (auth.allow_unauthenticated \
                     = true) to serve it open",
                    config.listen
                )));
            }
            tracing::warn!(
                listen = %config.listen,
                "no [[auth.clients]] configured: serving without authentication"
            );
        }
        let tls = config.tls.acceptors()?;

        let started = Instant::now();
        let spill = config.spill_dir();
        // Spill files of queries that ran before a crash are garbage.
        if spill.exists() {
            std::fs::remove_dir_all(&spill).map_err(|e| Error::io(&spill, e))?;
        }
        std::fs::create_dir_all(&spill).map_err(|e| Error::io(&spill, e))?;
        let (catalog, replay) = Catalog::open(
            storage,
            node,
            &config.data_dir.join("wal"),
            config.wal_config(),
            config.table_config(),
        )
        .await?;
        let replayed = replay.restored + replay.already_committed + replay.orphaned;
        info!(
            tables = catalog.table_names().len(),
            wal_records = replayed,
            restored = replay.restored,
            already_committed = replay.already_committed,
            orphaned = replay.orphaned,
            commits = replay.commits,
            skipped_as_corrupt = replay.skipped,
            ms = started.elapsed().as_millis() as u64,
            "replayed the WAL"
        );
        catalog.start_committers();

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Config(e.to_string()))?;
        let (stop, stopped) = watch::channel(false);
        let token_addr = match &auth {
            None => None,
            Some(auth) => {
                let at = token_endpoint::address(config.auth.token_listen, config.listen);
                let listener = TcpListener::bind(at).await.map_err(|e| {
                    Error::Config(format!("cannot listen on {at} for the token endpoint: {e}"))
                })?;
                let token_addr = listener
                    .local_addr()
                    .map_err(|e| Error::Config(e.to_string()))?;
                let http1 = tls.as_ref().map(|(_, http1)| http1.clone());
                token_endpoint::serve(listener, Arc::clone(auth), http1, stopped.clone());
                info!(token_addr = %token_addr, tls = tls.is_some(), "token endpoint listening");
                Some(token_addr)
            }
        };
        if auth.is_some() && tls.is_none() && !config.listen.ip().is_loopback() {
            warn!(
                listen = %config.listen,
                "authentication without [tls]: client secrets and tokens cross the network in \
                 the clear"
            );
        }
        let gate = Gate(auth.clone());
        let service = WeirService::new(Arc::clone(&catalog), &config, auth, stopped.clone())?;
        let max_message_bytes = config
            .limits
            .max_request_bytes
            .saturating_add(MESSAGE_FRAMING_BYTES);
        // The token is checked on the headers, before any message is read.
        let zerobus = InterceptedService::new(
            ZerobusService::new(service.ingest().clone()).into_server(max_message_bytes),
            gate.clone(),
        );
        let flight = InterceptedService::new(
            FlightServiceServer::new(service)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES),
            gate,
        );
        let incoming = incoming(listener, tls.map(|(grpc, _)| grpc), stopped.clone());
        let mut until_stopped = stopped;
        let serving = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .max_frame_size(MAX_FRAME_BYTES)
                // Dead peers are found and their streams end.
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .add_service(flight)
                .add_service(zerobus)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = until_stopped.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(Error::from)
        });
        info!(%addr, tls = config.tls.cert_file.is_some(), "listening");
        Ok(Self {
            addr,
            token_addr,
            catalog,
            stop,
            serving,
            _lock: lock,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the token endpoint, when authentication is on.
    pub fn token_addr(&self) -> Option<SocketAddr> {
        self.token_addr
    }

    /// The node's tables.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Stops accepting, ends every stream after acking what is durable,
    /// commits every tail to Delta and releases the data directory.
    pub async fn shutdown(mut self) -> Result<()> {
        info!("shutting down");
        self.stop.send_replace(true);
        // Streams drain in DRAIN_GRACE; a peer that stops reading does not
        // hold the shutdown up for longer than SHUTDOWN_WAIT.
        match tokio::time::timeout(SHUTDOWN_WAIT, &mut self.serving).await {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => return Err(Error::Config(format!("server task failed: {e}"))),
            Err(_) => {
                warn!(
                    seconds = SHUTDOWN_WAIT.as_secs(),
                    "connections still open after the drain; closing them"
                );
                self.serving.abort();
            }
        }
        self.catalog.shutdown().await?;
        info!("stopped");
        Ok(())
    }
}

/// How long shutdown waits for connections to close after the drain.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// HTTP/2 pings on idle connections, and how long an answer may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 256;

/// The token check in front of every gRPC call: UNAUTHENTICATED without a
/// valid bearer token when authentication is on. What the token allows is
/// checked by each call.
#[derive(Clone)]
struct Gate(Option<Arc<Auth>>);

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        crate::auth::principal(self.0.as_deref(), request.metadata())?;
        Ok(request)
    }
}

/// Accepted gRPC connections, with `TCP_NODELAY` and, with `tls`, after
/// the handshake (each in a task of its own, so a slow client holds up
/// nobody).
fn incoming(
    listener: TcpListener,
    tls: Option<Tls>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                accepted = listener.accept() => accepted,
            };
            let socket = match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Acks are small writes: without TCP_NODELAY each one that
            // follows an unacknowledged segment waits for the peer's
            // delayed ACK (40 ms on Linux).
            if let Err(e) = socket.set_nodelay(true) {
                warn!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(socket))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                        info!("too many TLS handshakes at once; dropping a connection");
                        continue;
                    };
                    let (tls, tx) = (tls.clone(), tx.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(socket)).await
                        {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(e)) => info!(error = %e, "TLS handshake failed"),
                            Err(_) => info!("TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Drop for Server {
    /// A server dropped without [`Server::shutdown`] stops serving and
    /// committing at once, leaving its tails in the WAL, as a crash would.
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.serving.abort();
        self.catalog.stop_committers();
    }
}
