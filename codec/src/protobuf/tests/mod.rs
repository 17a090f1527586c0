//! Tests of the protobuf decoder, by theme:
//!
//! * `semantics`: protobuf decoding rules (presence, defaults, last value
//!   wins, merging, packed lists, unknown fields, oneofs, maps);
//! * `mapping`: protobuf types into the Arrow column types a table may have,
//!   and descriptors a table rejects;
//! * `errors`: each decode error and its message;
//! * `properties`: random messages encoded by prost-reflect, decoded here
//!   and compared value by value;
//! * `neowise`: the benchmark schema.

mod errors;
mod mapping;
mod neowise;
mod properties;
mod semantics;
pub(crate) mod support;
