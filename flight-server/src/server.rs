//! Starting and stopping a node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;
use weir_provider::Catalog;

use crate::node::{DataDirLock, node_id};
use crate::{Config, Error, Result, WeirService};

/// Room for a message's framing (IPC header, app_metadata) beyond the
/// request bytes the limits allow.
const MESSAGE_FRAMING_BYTES: usize = 1 << 20;

/// Query results are sent in messages of at most this size.
const MAX_ENCODING_MESSAGE_BYTES: usize = 256 << 20;

/// A running node.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
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
        let service = WeirService::new(Arc::clone(&catalog), &config, stopped.clone())?;
        let flight = FlightServiceServer::new(service)
            .max_decoding_message_size(
                config
                    .limits
                    .max_request_bytes
                    .saturating_add(MESSAGE_FRAMING_BYTES),
            )
            .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
        let mut until_stopped = stopped;
        // Acks are small writes: without TCP_NODELAY each one that follows
        // an unacknowledged segment waits for the peer's delayed ACK (40 ms
        // on Linux).
        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            accepted.inspect(|socket| {
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
                }
            })
        });
        let serving = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(flight)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = until_stopped.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(Error::from)
        });
        info!(%addr, "listening");
        Ok(Self {
            addr,
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

    /// The node's tables.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Stops accepting, ends every stream after acking what is durable,
    /// commits every tail to Delta and releases the data directory.
    pub async fn shutdown(mut self) -> Result<()> {
        info!("shutting down");
        self.stop.send_replace(true);
        match (&mut self.serving).await {
            Ok(result) => result?,
            Err(e) => return Err(Error::Config(format!("server task failed: {e}"))),
        }
        self.catalog.shutdown().await?;
        info!("stopped");
        Ok(())
    }
}

impl Drop for Server {
    /// A server dropped without [`Server::shutdown`] stops serving and
    /// committing at once, leaving its tails in the WAL, as a crash would.
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.serving.abort();
        self.catalog.stop_committers();
    }
}
