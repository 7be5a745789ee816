//! Reads and writes the `metadata_props` of an ONNX model file, the key/value pairs that bind a
//! bundle's graphs to its card (see [`crate::bundle`]).
//!
//! An ONNX file is a protobuf `ModelProto`; its field 14 is a repeated `StringStringEntryProto`
//! (`key` = 1, `value` = 2). Only the top level is walked: every other field is copied byte for
//! byte, so the graph is never re-encoded and any producer's file can be stamped. Protobuf parsers
//! accept fields in any order and concatenate repeated ones, so an entry appended at the end is read
//! like one written by the exporter.

use std::string::String;
use std::vec::Vec;

/// Field number of `ModelProto.metadata_props`.
const METADATA_PROPS: u64 = 14;
/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

/// Why the bytes are not a protobuf message this module can walk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid ONNX model file: {0}")]
pub struct OnnxMetadataError(String);

fn malformed(what: &str, at: usize) -> OnnxMetadataError {
    OnnxMetadataError(std::format!("{what} at byte {at}"))
}

/// One top-level field: its number, wire type, and the byte ranges of the whole field and its payload.
struct Field {
    number: u64,
    wire: u64,
    whole: core::ops::Range<usize>,
    payload: core::ops::Range<usize>,
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, OnnxMetadataError> {
    let start = *at;
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or_else(|| malformed("truncated varint", start))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("varint longer than 10 bytes", start))
}

/// Splits a message into its fields, checking that every length stays inside the buffer.
fn fields(bytes: &[u8]) -> Result<Vec<Field>, OnnxMetadataError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let tag = varint(bytes, &mut at)?;
        let (number, wire) = (tag >> 3, tag & 7);
        if number == 0 {
            return Err(malformed("field number 0", start));
        }
        let payload_start = at;
        let end = match wire {
            VARINT => {
                varint(bytes, &mut at)?;
                at
            }
            FIXED64 => at.checked_add(8).ok_or_else(|| malformed("overflow", start))?,
            FIXED32 => at.checked_add(4).ok_or_else(|| malformed("overflow", start))?,
            LENGTH_DELIMITED => {
                let len = usize::try_from(varint(bytes, &mut at)?).map_err(|_| malformed("length overflow", start))?;
                at.checked_add(len).ok_or_else(|| malformed("length overflow", start))?
            }
            _ => return Err(malformed("unsupported wire type", start)),
        };
        if end > bytes.len() {
            return Err(malformed("field runs past the end of the file", start));
        }
        let payload = if wire == LENGTH_DELIMITED { at..end } else { payload_start..end };
        out.push(Field { number, wire, whole: start..end, payload });
        at = end;
    }
    Ok(out)
}

/// (key, value) of one `StringStringEntryProto`.
fn entry(bytes: &[u8]) -> Result<(String, String), OnnxMetadataError> {
    let (mut key, mut value) = (String::new(), String::new());
    for field in fields(bytes)? {
        let text = || {
            std::str::from_utf8(&bytes[field.payload.clone()])
                .map(String::from)
                .map_err(|_| malformed("metadata text is not UTF-8", field.payload.start))
        };
        match (field.number, field.wire) {
            (1, LENGTH_DELIMITED) => key = text()?,
            (2, LENGTH_DELIMITED) => value = text()?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// Every `metadata_props` entry of an ONNX model file, in file order.
pub fn read(model: &[u8]) -> Result<Vec<(String, String)>, OnnxMetadataError> {
    fields(model)?
        .into_iter()
        .filter(|f| f.number == METADATA_PROPS && f.wire == LENGTH_DELIMITED)
        .map(|f| entry(&model[f.payload]))
        .collect()
}

/// The value of `key`, if the file carries exactly one entry for it (two are treated as none, so a
/// stamp cannot be shadowed by an appended one).
pub fn get(model: &[u8], key: &str) -> Result<Option<String>, OnnxMetadataError> {
    let mut values = read(model)?.into_iter().filter(|(k, _)| k == key).map(|(_, v)| v);
    let first = values.next();
    Ok(if values.next().is_some() { None } else { first })
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn push_bytes(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    push_varint(out, (number << 3) | LENGTH_DELIMITED);
    push_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// `model` with every entry for `key` replaced by one entry `key = value` (appended at the end).
pub fn set(model: &[u8], key: &str, value: &str) -> Result<Vec<u8>, OnnxMetadataError> {
    let mut out = Vec::with_capacity(model.len() + key.len() + value.len() + 16);
    for field in fields(model)? {
        let is_key = field.number == METADATA_PROPS
            && field.wire == LENGTH_DELIMITED
            && entry(&model[field.payload.clone()])?.0 == key;
        if !is_key {
            out.extend_from_slice(&model[field.whole]);
        }
    }
    let mut pair = Vec::with_capacity(key.len() + value.len() + 4);
    push_bytes(&mut pair, 1, key.as_bytes());
    push_bytes(&mut pair, 2, value.as_bytes());
    push_bytes(&mut out, METADATA_PROPS, &pair);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-encoded ModelProto: ir_version 8, producer "x", one entry a = b.
    fn sample() -> Vec<u8> {
        let mut m = std::vec![0x08, 0x08];
        push_bytes(&mut m, 2, b"x");
        let mut pair = Vec::new();
        push_bytes(&mut pair, 1, b"a");
        push_bytes(&mut pair, 2, b"b");
        push_bytes(&mut m, METADATA_PROPS, &pair);
        m
    }

    #[test]
    fn reads_sets_and_replaces_entries() {
        let m = sample();
        assert_eq!(read(&m).unwrap(), std::vec![("a".into(), "b".into())]);
        let stamped = set(&m, "k", "v1").unwrap();
        let restamped = set(&stamped, "k", "v2").unwrap();
        assert_eq!(get(&restamped, "k").unwrap().as_deref(), Some("v2"));
        assert_eq!(get(&restamped, "a").unwrap().as_deref(), Some("b"));
        assert_eq!(read(&restamped).unwrap().len(), 2);
        // Everything else is kept byte for byte.
        assert_eq!(&restamped[..5], &m[..5]);
    }

    #[test]
    fn a_duplicated_key_reads_as_absent() {
        let mut m = set(&sample(), "k", "v").unwrap();
        let mut pair = Vec::new();
        push_bytes(&mut pair, 1, b"k");
        push_bytes(&mut pair, 2, b"forged");
        push_bytes(&mut m, METADATA_PROPS, &pair);
        assert_eq!(get(&m, "k").unwrap(), None);
    }

    #[test]
    fn truncated_or_garbled_files_are_errors_not_panics() {
        let m = set(&sample(), "k", "v").unwrap();
        for cut in 1..m.len() {
            let _ = read(&m[..cut]);
        }
        assert!(read(&m[..m.len() - 1]).is_err());
        assert!(read(&[0x0b, 0x00]).is_err(), "wire type 3 (groups) is refused");
        assert!(read(&[0x72, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(), "length past the end");
        assert!(read(&[0x08; 11]).is_err());
    }
}
