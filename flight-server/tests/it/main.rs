//! Tests of the `weir` binary as a process: crash recovery under SIGKILL,
//! clean shutdown on SIGTERM, the data directory lock, and the SQL CLI.

mod cli;
mod crash;
mod process;
