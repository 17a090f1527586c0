//! Tests of the `weir` binary as a process: crash recovery under SIGKILL,
//! clean shutdown on SIGTERM, the data directory lock, the SQL CLI, and
//! the limits that keep crafted requests from killing or bloating it.

mod bench;
mod bounded;
mod cli;
mod crash;
mod limits;
mod process;
