//! The `weir` command: `weir serve` runs a node, `weir sql` is the SQL
//! client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cli::{Format, Options};
use tracing_subscriber::EnvFilter;
use weir_flight_server::{Config, Server};

mod bench;
mod cli;

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "A streaming table service: push rows over gRPC, query them with SQL, land them in Delta Lake"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (defaults: 127.0.0.1:50051, ./weir-data).
    Serve {
        /// Address to listen on.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory (WAL, node id, and the tables by default).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where tables live: a local path or an object store URL.
        #[arg(long)]
        storage: Option<String>,
        /// A TOML config file for everything else.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve without authentication on an address other than loopback
        /// (`auth.allow_unauthenticated`).
        #[arg(long)]
        allow_unauthenticated: bool,
        /// Acknowledge ingest requests once decoded and discard them,
        /// writing nothing: the transport baseline of `weir bench`. Never
        /// for data you want to keep.
        #[arg(long)]
        sink: bool,
    },
    /// Print the SHA-256 of a client secret, as `[[auth.clients]]
    /// secret_sha256` holds it.
    HashSecret {
        /// The secret (random, e.g. `openssl rand -hex 32`).
        secret: String,
    },
    /// Measure ingest: many producers pushing NEOWISE rows into one table
    /// (starts its own server unless --connect is given).
    Bench {
        /// Concurrent producer streams (1 to 1,024).
        #[arg(long, default_value_t = 64)]
        streams: usize,
        /// Seconds the producers send, after the warm-up.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds left out of the figures at the start.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Rows in each request.
        #[arg(long, default_value_t = 1000)]
        rows_per_request: usize,
        /// Requests each stream has in flight.
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
        /// What the producers send: protobuf, arrow or both (one after
        /// the other).
        #[arg(long, default_value = "both")]
        input: String,
        /// A running server to measure instead of starting one; the run
        /// drops and creates its tables neowise_protobuf and neowise_arrow
        /// there.
        #[arg(long)]
        connect: Option<String>,
        /// The data directory of the server it starts (default: a scratch
        /// directory, removed after).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seed of the generated rows.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write a plot of throughput and ack latency over time here (SVG).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Leave out the baselines (the disk alone, and the transport to
        /// a `--sink` server), which need a server of its own.
        #[arg(long)]
        no_baselines: bool,
        /// The disk baseline's bytes between two syncs.
        #[arg(long, default_value_t = 4 << 20)]
        disk_sync_bytes: u64,
        /// A Python with the deltalake package (scripts/bench-setup), to
        /// measure appending the same rows without weir.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Pace the producers to this many MB/s in all, to measure ack
        /// latency below the maximum load.
        #[arg(long)]
        rate: Option<f64>,
        /// Measure queries instead: the same queries over rows in the
        /// tail, over the rows committed to Parquet, and by DataFusion
        /// reading those Parquet files directly (its own server; --streams,
        /// --duration, --rate and the baselines do not apply).
        #[arg(long)]
        query: bool,
        /// Rows --query loads.
        #[arg(long, default_value_t = 1_000_000)]
        query_rows: usize,
        /// Times --query runs each query per contender (the median counts).
        #[arg(long, default_value_t = 5)]
        query_runs: usize,
    },
    /// Run SQL against a node: interactive, or with -c / -f.
    Sql {
        /// The server: http://HOST:PORT, or https://HOST:PORT for TLS.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        server: String,
        /// A PEM CA certificate to trust for an https:// server (besides
        /// the system's roots).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Statements to run, then exit.
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
        /// A file of statements to run, then exit.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Output format: table, csv or json.
        #[arg(long, default_value = "table")]
        format: Format,
        /// Print the row count and time of each statement.
        #[arg(long)]
        timing: bool,
        /// A bearer token from the server's token endpoint (for a server
        /// with `[[auth.clients]]`).
        #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve {
                listen,
                data_dir,
                storage,
                config,
                allow_unauthenticated,
                sink,
            } => {
                serve(
                    listen,
                    data_dir,
                    storage,
                    config,
                    (allow_unauthenticated, sink),
                )
                .await
            }
            Command::Bench {
                streams,
                duration,
                warmup,
                rows_per_request,
                in_flight,
                input,
                connect,
                data_dir,
                seed,
                json,
                svg,
                no_baselines,
                disk_sync_bytes,
                python,
                rate,
                query,
                query_rows,
                query_runs,
            } => {
                let inputs = match input.as_str() {
                    "protobuf" => vec![bench::Input::Protobuf],
                    "arrow" => vec![bench::Input::Arrow],
                    "both" => vec![bench::Input::Protobuf, bench::Input::Arrow],
                    other => {
                        eprintln!("error: --input {other:?}: use protobuf, arrow or both");
                        return ExitCode::FAILURE;
                    }
                };
                let seconds = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO);
                let options = bench::Options {
                    streams,
                    duration: seconds(duration),
                    warmup: seconds(warmup),
                    rows_per_request,
                    in_flight,
                    inputs,
                    connect,
                    data_dir,
                    seed,
                    json,
                    svg,
                    baselines: !no_baselines,
                    disk_sync_bytes: disk_sync_bytes.max(1),
                    python,
                    rate_mb_per_s: rate,
                    query,
                    query_rows,
                    query_runs,
                };
                match bench::run(options).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => {
                        eprintln!("error: a check failed (see the report)");
                        ExitCode::FAILURE
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::HashSecret { secret } => {
                println!("{}", weir_flight_server::auth::hash_secret(&secret));
                ExitCode::SUCCESS
            }
            Command::Sql {
                server,
                command,
                file,
                format,
                timing,
                token,
                ca_file,
            } => {
                let options = Options {
                    server,
                    command,
                    file,
                    format,
                    timing,
                    token,
                    ca_file,
                };
                match cli::run(options).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

/// What `weir serve` logs without `RUST_LOG`: weir's own events, and only
/// warnings and errors of the libraries under it (the Delta kernel logs
/// each commit's snapshot, schema and all, at info: about 40 KB a commit
/// of a 144-column table).
const DEFAULT_LOG: &str = "info,buoyant_kernel=warn,delta_kernel=warn,deltalake_core=warn";

async fn serve(
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
    storage: Option<String>,
    config_file: Option<PathBuf>,
    (allow_unauthenticated, sink): (bool, bool),
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = match config_file {
        Some(path) => match Config::from_file(&path) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if storage.is_some() {
        config.storage = storage;
    }
    config.auth.allow_unauthenticated |= allow_unauthenticated;
    if sink {
        tracing::warn!(
            "--sink: ingest requests are acknowledged and discarded, nothing is written"
        );
        config.sink = true;
    }
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
