//! The `weir` server: Arrow Flight ingest and FlightSQL over one gRPC port,
//! on top of the WAL, the tables and the SQL engine.
//!
//! - [`Config`]: flags and the TOML file; every setting has a default.
//! - [`Server`]: starts everything ([`Server::start`]) and stops it cleanly
//!   ([`Server::shutdown`]): stop accepting, ack what is durable, commit
//!   every tail to Delta.
//! - [`ingest`]: the ingest layer every producer protocol shares
//!   (sequencing, acks, back-pressure, drain), with its adapters
//!   [`doput`] (Arrow Flight `DoPut`) and [`zerobus`] (the Zerobus SDKs'
//!   service); [`session`]: named, resumable streams.
//! - [`WeirService`]: the Flight/FlightSQL service.
//! - [`node`]: the data directory's lock and the node id.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), weir_flight_server::Error> {
//! use weir_flight_server::{Config, Server};
//!
//! let server = Server::start(Config::default()).await?; // 127.0.0.1:50051, ./weir-data
//! println!("listening on {}", server.addr());
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod config;
pub mod doput;
mod error;
mod execute;
pub mod ingest;
pub mod metadata;
pub mod node;
pub mod records;
mod server;
mod service;
pub mod session;
mod statements;
pub mod tls;
pub mod token_endpoint;
pub mod zerobus;

pub use config::{CommitSection, Config, Corruption, LimitsSection, WalSection};
pub use error::{Error, Result};
pub use server::Server;
pub use service::WeirService;
