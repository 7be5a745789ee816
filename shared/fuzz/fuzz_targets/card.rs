//! Fuzzes what `Bundle::open` parses before it trusts a bundle: the model card (JSON → `ModelCard`,
//! range checks, canonical digest) and the ONNX `metadata_props` stamp reader/writer on arbitrary
//! protobuf bytes. The first byte picks a mode. Properties: nothing panics; a card that parses and
//! passes its checks has a digest that is stable across a JSON round trip; a stamp that `set` writes,
//! `get` reads back.
#![no_main]

use cdnet_shared::bundle::ModelCard;
use cdnet_shared::onnx_metadata;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "cdnet.card_sha256";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let Ok(card) = serde_json::from_slice::<ModelCard>(bytes) else { return };
        if card.check().is_err() {
            return;
        }
        let digest = card.digest().expect("a checked card has a digest");
        let again: ModelCard = serde_json::from_slice(&serde_json::to_vec(&card).unwrap()).expect("re-parses");
        assert_eq!(again.digest().unwrap(), digest, "the digest changed across a JSON round trip");
    } else {
        let _ = onnx_metadata::get(bytes, KEY);
        if let Ok(stamped) = onnx_metadata::set(bytes, KEY, "0123abcd") {
            assert_eq!(onnx_metadata::get(&stamped, KEY).expect("a stamped graph reads"), Some("0123abcd".into()));
        }
    }
});
