//! Property tests against prost-reflect, an independent implementation:
//! random messages of rich descriptors are encoded by `DynamicMessage` and
//! decoded here, and every value is compared. Variations cover field order,
//! merging of concatenated records (last value wins, message merge, oneof
//! switching, map keys), and damaged bytes (no panic; a success must agree
//! with the reference).

use proptest::prelude::*;
use prost::Message as _;

use super::support::{
    Rng, assert_row, encode_shuffled, natural_decoder, random_message, reference_decode,
    rich_descriptors,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_messages_round_trip(seed in any::<u64>(), presence in 0u64..=100, max_len in 0u64..5, n in 1usize..12) {
        for desc in rich_descriptors() {
            let decoder = natural_decoder(&desc);
            let mut rng = Rng(seed);
            let messages: Vec<_> = (0..n).map(|_| random_message(&desc, &mut rng, presence, max_len, 0)).collect();
            let bytes: Vec<Vec<u8>> = messages.iter().map(|m| m.encode_to_vec()).collect();
            let batch = decoder.decode(bytes.iter().map(Vec::as_slice)).unwrap();
            prop_assert_eq!(batch.num_rows(), n);
            for (row, m) in messages.iter().enumerate() {
                assert_row(m, &batch, row);
            }
        }
    }

    #[test]
    fn fields_in_any_order(seed in any::<u64>(), presence in 20u64..=100) {
        for desc in rich_descriptors() {
            let decoder = natural_decoder(&desc);
            let mut rng = Rng(seed);
            let m = random_message(&desc, &mut rng, presence, 3, 0);
            let bytes = encode_shuffled(&m, &mut rng);
            let batch = decoder.decode([bytes.as_slice()]).unwrap();
            assert_row(&m, &batch, 0);
        }
    }

    #[test]
    fn concatenated_records_merge_like_protobuf(seed in any::<u64>(), presence in 0u64..=100) {
        for desc in rich_descriptors() {
            let decoder = natural_decoder(&desc);
            let mut rng = Rng(seed);
            let a = random_message(&desc, &mut rng, presence, 3, 0);
            let b = random_message(&desc, &mut rng, presence, 3, 0);
            let c = random_message(&desc, &mut rng, presence, 3, 0);
            let mut bytes = a.encode_to_vec();
            bytes.extend(encode_shuffled(&b, &mut rng));
            bytes.extend(c.encode_to_vec());
            let expected = reference_decode(&desc, &bytes).unwrap();
            let batch = decoder.decode([bytes.as_slice()]).unwrap();
            assert_row(&expected, &batch, 0);
        }
    }

    #[test]
    fn damaged_records_never_panic(seed in any::<u64>(), cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        for desc in rich_descriptors() {
            let decoder = natural_decoder(&desc);
            let mut rng = Rng(seed);
            let m = random_message(&desc, &mut rng, 70, 3, 0);
            let mut bytes = m.encode_to_vec();
            if bytes.is_empty() {
                continue;
            }
            for (at, v) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= v;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Ok(batch) = decoder.decode([bytes.as_slice()]) {
                let expected = reference_decode(&desc, &bytes);
                prop_assert!(expected.is_some(), "weir accepted what prost-reflect rejects");
                assert_row(&expected.unwrap(), &batch, 0);
            }
        }
    }
}
