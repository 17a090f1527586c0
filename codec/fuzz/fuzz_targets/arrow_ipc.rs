//! Arbitrary Flight messages (IPC header and body pairs) through the
//! checked IPC decoder and conform; see `weir_codec::ipc_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_codec::ipc_stream::fuzz_messages(data);
});
