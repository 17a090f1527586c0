//! Arbitrary Flight messages (IPC header and body pairs) through the
//! checked IPC decoder and conform; see `weir_codec::ipc_stream`.
//!
//! arrow-ipc panics on some malformed flatbuffers, and the decoder catches
//! those panics and returns an error (as it does in the server).
//! libfuzzer-sys's panic hook would abort at the panic itself, before the
//! decoder's catch; the silent hook below leaves that to libfuzzer-sys's
//! own check, which still aborts on any panic that escapes the target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    weir_codec::ipc_stream::fuzz_messages(data);
});
