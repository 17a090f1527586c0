//! Fuzzes the protobuf decoder: arbitrary bytes pick a schema and a few
//! records (see `weir_codec::protobuf::fuzz`), which must never panic and
//! must decode consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_codec::protobuf::fuzz::decode_arbitrary(data);
});
