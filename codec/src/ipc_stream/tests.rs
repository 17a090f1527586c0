use arrow::array::{DictionaryArray, Int64Array, NullArray, StringArray};
use arrow::datatypes::Int32Type;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{
    DictionaryTracker, EncodedData, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};

use super::*;

/// The messages a Flight producer sends for `batch`: schema, dictionaries,
/// batch.
fn messages(batch: &RecordBatch, compression: Option<CompressionType>) -> Vec<EncodedData> {
    let generator = IpcDataGenerator::default();
    let options = IpcWriteOptions::default()
        .try_with_compression(compression)
        .unwrap();
    let mut tracker = DictionaryTracker::new(false);
    let schema =
        generator.schema_to_bytes_with_dictionary_tracker(&batch.schema(), &mut tracker, &options);
    let (dictionaries, encoded) = generator
        .encode(
            batch,
            &mut tracker,
            &options,
            &mut IpcWriteContext::default(),
        )
        .unwrap();
    let mut all = vec![schema];
    all.extend(dictionaries);
    all.push(encoded);
    all
}

fn decode_all(decoder: &mut IpcStreamDecoder, messages: &[EncodedData]) -> Result<Vec<IpcMessage>> {
    messages
        .iter()
        .map(|m| decoder.decode(&m.ipc_message, Bytes::from(m.arrow_data.clone())))
        .collect()
}

fn sample() -> RecordBatch {
    let sites = DictionaryArray::<Int32Type>::try_new(
        arrow::array::Int32Array::from(vec![0, 1, 0]),
        Arc::new(StringArray::from(vec!["north", "south"])),
    )
    .unwrap();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        ("site", Arc::new(sites) as ArrayRef),
    ])
    .unwrap()
}

#[test]
fn a_stream_round_trips_with_dictionaries_and_compression() {
    for compression in [None, Some(CompressionType::ZSTD)] {
        let batch = sample();
        let mut decoder = IpcStreamDecoder::new(Limits::default());
        let decoded = decode_all(&mut decoder, &messages(&batch, compression)).unwrap();
        assert!(
            matches!(&decoded[0], IpcMessage::Schema(s) if s.as_ref() == batch.schema().as_ref())
        );
        assert!(matches!(decoded[1], IpcMessage::Dictionary));
        match decoded.last().unwrap() {
            IpcMessage::Batch(out) => assert_eq!(out, &batch),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn lz4_compressed_batches_are_refused() {
    let batch = sample();
    let mut decoder = IpcStreamDecoder::new(Limits::default());
    let err = decode_all(
        &mut decoder,
        &messages(&batch, Some(CompressionType::LZ4_FRAME)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("LZ4-compressed"), "{err}");
}

#[test]
fn a_body_shorter_than_its_header_says_is_invalid_not_a_panic() {
    let batch = sample();
    let all = messages(&batch, None);
    let mut decoder = IpcStreamDecoder::new(Limits::default());
    decode_all(&mut decoder, &all[..2]).unwrap();
    let last = all.last().unwrap();
    let short = Bytes::copy_from_slice(&last.arrow_data[..last.arrow_data.len() / 2]);
    let err = decoder.decode(&last.ipc_message, short).unwrap_err();
    assert!(matches!(err, Error::InvalidIpc(_)), "{err}");
    assert!(err.to_string().contains("declares a body of"), "{err}");
    // The decoder is still usable: the whole message decodes.
    let full = Bytes::from(last.arrow_data.clone());
    assert!(matches!(
        decoder.decode(&last.ipc_message, full).unwrap(),
        IpcMessage::Batch(_)
    ));
}

#[test]
fn declared_sizes_are_checked_against_the_limits_before_decoding() {
    // Two billion Null rows: a few hundred bytes on the wire.
    let rows = i32::MAX as usize;
    let nulls =
        RecordBatch::try_from_iter([("temp", Arc::new(NullArray::new(rows)) as ArrayRef)]).unwrap();
    let all = messages(&nulls, None);
    assert!(all.last().unwrap().arrow_data.len() < 1024);
    let mut decoder = IpcStreamDecoder::new(Limits::default());
    let err = decode_all(&mut decoder, &all).unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert!(err.to_string().contains(&format!("{rows} rows")), "{err}");

    // A compressed buffer that claims to decompress to 1 TiB.
    let batch = RecordBatch::try_from_iter([(
        "id",
        Arc::new(Int64Array::from_iter_values(0..1000)) as ArrayRef,
    )])
    .unwrap();
    let mut all = messages(&batch, Some(CompressionType::ZSTD));
    let data = &mut all.last_mut().unwrap().arrow_data;
    // The values buffer (after an empty validity buffer) starts the body.
    data[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let mut decoder = IpcStreamDecoder::new(Limits::default());
    let err = decode_all(&mut decoder, &all).unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert!(
        err.to_string().contains("limits.max_request_bytes"),
        "{err}"
    );
}

#[test]
fn messages_out_of_place_are_invalid() {
    let batch = sample();
    let all = messages(&batch, None);
    let mut decoder = IpcStreamDecoder::new(Limits::default());
    let err = decoder
        .decode(&all[2].ipc_message, Bytes::from(all[2].arrow_data.clone()))
        .unwrap_err();
    assert!(err.to_string().contains("before the schema"), "{err}");
    decode_all(&mut decoder, &all[..1]).unwrap();
    let err = decode_all(&mut decoder, &all[..1]).unwrap_err();
    assert!(err.to_string().contains("a second schema"), "{err}");
    let err = decoder
        .decode(b"not a flatbuffer", Bytes::new())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidIpc(_)), "{err}");
}

/// The fuzz target's input format, for seeds and this test.
fn framed(messages: &[EncodedData]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        for part in [&m.ipc_message, &m.arrow_data] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

#[test]
fn fuzz_logic_accepts_a_valid_stream_and_survives_mutations() {
    let table_batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "site",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
        ),
    ])
    .unwrap();
    let valid = framed(&messages(&table_batch, None));
    assert_eq!(fuzz_messages(&valid), 1);
    let compressed = framed(&messages(&sample(), Some(CompressionType::ZSTD)));
    assert_eq!(fuzz_messages(&compressed), 1);
    // Deterministic mutations: flipped bytes, cut and repeated tails.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in [&valid, &compressed] {
        for _ in 0..3000 {
            let mut input = seed.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            if next() % 4 == 0 {
                input.truncate((next() as usize) % input.len());
            }
            fuzz_messages(&input);
        }
    }
}

#[test]
fn the_fuzz_seeds_written_by_pyarrow_decode_and_conform() {
    // Made with pyarrow's IPC stream writer (see docs/PROTOBUF.md,
    // "Fuzzing"): another producer's messages, not this crate's.
    for (name, seed) in [
        (
            "sensors",
            &include_bytes!("../../fuzz/seeds/arrow_ipc/sensors")[..],
        ),
        (
            "sensors_zstd",
            &include_bytes!("../../fuzz/seeds/arrow_ipc/sensors_zstd")[..],
        ),
        (
            "dictionary",
            &include_bytes!("../../fuzz/seeds/arrow_ipc/dictionary")[..],
        ),
        (
            "nulls",
            &include_bytes!("../../fuzz/seeds/arrow_ipc/nulls")[..],
        ),
    ] {
        assert_eq!(fuzz_messages(seed), 1, "{name}");
    }
}

#[test]
fn a_schema_that_panics_in_arrows_reader_is_an_error() {
    // Found by the fuzzer: a Schema message whose field type arrow-ipc's
    // converter does not handle (it panics with `unimplemented!`).
    let input = include_bytes!("../../fuzz/seeds/arrow_ipc/panicking_schema");
    assert_eq!(fuzz_messages(input), 0);
}

#[test]
fn a_body_at_an_unaligned_address_decodes_also_with_a_union_column() {
    // A dense union, as FlightSQL clients send parameters.
    let fields = arrow::datatypes::UnionFields::try_new(
        [0, 1],
        [
            arrow::datatypes::Field::new("int", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("text", arrow::datatypes::DataType::Utf8, true),
        ],
    )
    .unwrap();
    let union = arrow::array::UnionArray::try_new(
        fields,
        vec![1i8, 0].into(),
        Some(vec![0i32, 0].into()),
        vec![
            Arc::new(Int64Array::from(vec![7])) as ArrayRef,
            Arc::new(StringArray::from(vec!["north"])) as ArrayRef,
        ],
    )
    .unwrap();
    let batch = RecordBatch::try_from_iter([("p", Arc::new(union) as ArrayRef)]).unwrap();
    let messages = messages(&batch, None);
    let mut decoder = IpcStreamDecoder::new(Limits::default());
    for message in &messages {
        // The body one byte into a buffer: never 8-byte aligned.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&message.arrow_data);
        let body = Bytes::from(shifted).slice(1..);
        assert_ne!(body.as_ptr().align_offset(8), 0);
        match decoder.decode(&message.ipc_message, body).unwrap() {
            IpcMessage::Batch(decoded) => assert_eq!(decoded, batch),
            IpcMessage::Schema(_) | IpcMessage::Dictionary | IpcMessage::None => {}
        }
    }
}
