//! Fuzzes what `Bundle::open` parses before it trusts a bundle: the model card (JSON → `ModelCard`,
//! range checks, canonical digest) and the ONNX `metadata_props` stamp reader/writer on arbitrary
//! protobuf bytes. The first byte picks a mode. Properties: nothing panics; a card that parses and
//! passes its checks is stamped with the digest a reader of the written card computes; a stamp that `set` writes,
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
        // What the writer stamps into the graphs must be what a reader of the written card computes
        // (`Bundle::write_card` writes `to_vec_pretty` of the card; `files` is not in the digest).
        let stamped = card.written_digest().expect("a checked card has a digest");
        let written = serde_json::to_vec_pretty(&card).unwrap();
        let read: ModelCard = serde_json::from_slice(&written).expect("a written card reads back");
        assert_eq!(read.digest().unwrap(), stamped, "the edge would compute another digest than the one stamped");
    } else {
        let _ = onnx_metadata::get(bytes, KEY);
        if let Ok(stamped) = onnx_metadata::set(bytes, KEY, "0123abcd") {
            assert_eq!(onnx_metadata::get(&stamped, KEY).expect("a stamped graph reads"), Some("0123abcd".into()));
        }
    }
});
