//! End-to-end tests: a real server on a loopback port, real gRPC clients,
//! real Delta tables on disk.

mod auth;
mod bad_input;
mod ingest;
mod records;
mod recovery;
mod resume;
mod sql;
mod statements;
mod support;
mod zerobus;
