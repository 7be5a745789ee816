//! One message ⇄ one packet.

use super::{Message, PROTOCOL_VERSION};
use crc::{CRC_32_ISO_HDLC, Crc, Table};

/// CRC-32/ISO-HDLC (zlib, Ethernet): poly 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF;
/// slice-by-16 tables (16 KiB) so the CRC runs at several GB/s.
pub(crate) const CRC32: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISO_HDLC);

/// Bytes a packet carries besides the message: the version byte and the CRC.
const OVERHEAD: usize = 1 + 4;

/// Worst-case COBS length of `raw` bytes (one code byte per 254 data bytes, at least one).
pub const fn max_encoded_len(raw: usize) -> usize {
    raw + raw.div_ceil(254) + 1
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The scratch or output buffer is too small for this message.
    #[error("buffer too small for the encoded packet")]
    BufferTooSmall,
}

/// Why a received packet was rejected. Each is counted by the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// More bytes than the decoder's buffer arrived without a terminating zero.
    #[error("packet longer than the receive buffer; skipped to the next zero byte")]
    Overflow,
    /// The bytes between two zeros are not valid COBS.
    #[error("invalid COBS framing")]
    Cobs,
    /// Too short to hold version, tag and CRC.
    #[error("packet too short")]
    TooShort,
    /// The CRC does not match: bytes were corrupted, lost or duplicated.
    #[error("CRC mismatch")]
    Crc,
    /// Intact packet from another protocol version.
    #[error("protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// CRC good but the message does not parse (unknown tag, bad field value, missing bytes).
    #[error("malformed message")]
    Malformed,
}

/// Encodes `message` as a wire packet (COBS + terminating zero) into `out`, using `scratch` for the
/// raw bytes; returns the number of bytes written to `out`.
pub fn encode_packet(message: &Message<'_>, scratch: &mut [u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let (version, body) = scratch.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
    *version = PROTOCOL_VERSION;
    let body_len = postcard::to_slice(message, body).map_err(|_| EncodeError::BufferTooSmall)?.len();
    let crc_at = 1 + body_len;
    let crc = CRC32.checksum(&scratch[..crc_at]);
    scratch.get_mut(crc_at..crc_at + 4).ok_or(EncodeError::BufferTooSmall)?.copy_from_slice(&crc.to_le_bytes());
    let raw = &scratch[..crc_at + 4];
    let n = cobs::try_encode(raw, out).map_err(|_| EncodeError::BufferTooSmall)?;
    *out.get_mut(n).ok_or(EncodeError::BufferTooSmall)? = 0;
    Ok(n + 1)
}

/// Encodes `message` as a wire packet in a new vector.
#[cfg(feature = "alloc")]
pub fn encode_packet_vec(message: &Message<'_>) -> Result<alloc::vec::Vec<u8>, EncodeError> {
    let raw_len = postcard::experimental::serialized_size(message).map_err(|_| EncodeError::BufferTooSmall)? + OVERHEAD;
    let mut scratch = alloc::vec![0u8; raw_len];
    let mut out = alloc::vec![0u8; max_encoded_len(raw_len) + 1];
    let n = encode_packet(message, &mut scratch, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Checks and parses one raw (already COBS-decoded) packet.
pub fn decode_packet(raw: &[u8]) -> Result<Message<'_>, PacketError> {
    if raw.len() < OVERHEAD + 1 {
        return Err(PacketError::TooShort);
    }
    let (content, crc) = raw.split_at(raw.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if CRC32.checksum(content) != crc {
        return Err(PacketError::Crc);
    }
    if content[0] != PROTOCOL_VERSION {
        return Err(PacketError::Version(content[0]));
    }
    // Bytes after the last field this side knows are ignored, not refused: that is what lets a
    // later revision append a field to a message without a new protocol version (docs/protocol.md §3).
    match postcard::take_from_bytes::<Message<'_>>(&content[1..]) {
        Ok((message, _appended)) => Ok(message),
        Err(_) => Err(PacketError::Malformed),
    }
}
