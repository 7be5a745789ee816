//! The probe link: what a B-scan probe (or its adapter) and the edge board say to each other.
//!
//! Every message travels as one *packet*:
//!
//! ```text
//! raw    = [PROTOCOL_VERSION] ++ postcard(Message) ++ crc32_le(version ++ postcard(Message))
//! wire   = COBS(raw) ++ [0x00]
//! ```
//!
//! CRC-32 is CRC-32/ISO-HDLC (the zlib/Ethernet CRC). `docs/protocol.md` specifies every byte so a
//! probe maker can implement it in C. Frames larger than one packet are sent as several
//! [`FrameChunk`]s; [`frames::FrameAssembler`] rebuilds them.

mod codec;
mod decoder;
#[cfg(feature = "alloc")]
pub mod frames;
mod message;
#[cfg(feature = "alloc")]
pub mod session;

#[cfg(feature = "alloc")]
pub use codec::encode_packet_vec;
pub use codec::{EncodeError, PacketError, decode_packet, encode_packet, max_encoded_len};
pub use decoder::{DecoderStats, FrameDecoder};
pub use message::*;

/// Protocol version carried in the first byte of every packet.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest pixel payload of one [`FrameChunk`].
pub const MAX_CHUNK_BYTES: usize = 65_536;

/// Largest packet before COBS (a full chunk plus the largest possible header and CRC).
pub const MAX_RAW_PACKET: usize = MAX_CHUNK_BYTES + 64;

/// Largest packet on the wire, COBS overhead and terminating zero included: a receiver whose
/// decoder buffer is this large accepts every valid packet.
pub const MAX_WIRE_PACKET: usize = max_encoded_len(MAX_RAW_PACKET) + 1;

/// Largest frame side the edge accepts (pixels).
pub const MAX_FRAME_SIDE: u16 = 4096;

/// Most heatmap cells in a result (16 × 16).
pub const MAX_HEATMAP_CELLS: usize = 256;

/// Bytes of the longest text field (probe id, model name).
pub const MAX_NAME_BYTES: usize = 32;

/// Bytes of an error's detail text.
pub const MAX_DETAIL_BYTES: usize = 96;
