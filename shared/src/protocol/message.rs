//! The messages. Field order is wire order; enum variant order is the wire tag — never reorder,
//! only append (and bump [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION) when a change is incompatible).

use super::{MAX_DETAIL_BYTES, MAX_HEATMAP_CELLS, MAX_NAME_BYTES};
use crate::MAX_CLASSES;
use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// One packet's payload.
// `Result` is ~400 bytes, the other variants far smaller. Boxing it would need an allocator, which
// a probe's microcontroller may not have; a message lives on the stack only briefly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Tag 0, probe → edge: who is talking and what frames to expect.
    Hello(Hello),
    /// Tag 1, edge → probe: answer to `Hello`, the model that will run.
    Ready(Ready),
    /// Tag 2, probe → edge: part (or all) of a frame's pixels.
    #[serde(borrow)]
    FrameChunk(FrameChunk<'a>),
    /// Tag 3, edge → probe: the diagnosis for one frame.
    Result(InferenceResult),
    /// Tag 4, either way: liveness, about once a second.
    Heartbeat(Heartbeat),
    /// Tag 5, either way: something went wrong with a frame or the link.
    Error(ErrorReport),
    /// Tag 6, edge → probe: a complete frame was not classified because a newer one arrived first.
    Skipped(Skipped),
    /// Tag 7, edge → probe: a complete frame was not classified because it shows no eye in view.
    NoEye(NoEye),
}

/// Pixel encoding of a frame. On the wire it is an enum tag (a varint); a value this side does not
/// know still parses, as [`PixelFormat::Unknown`], so the edge can answer
/// `Error(UnsupportedPixelFormat)` instead of dropping the whole `Hello` as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Tag 0: one byte per pixel, 0 = black, row-major, no padding.
    Gray8,
    /// Any other tag.
    Unknown(u32),
}

impl PixelFormat {
    /// The wire tag.
    pub fn code(self) -> u32 {
        match self {
            PixelFormat::Gray8 => 0,
            PixelFormat::Unknown(code) => code,
        }
    }

    /// The format of wire tag `code`.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => PixelFormat::Gray8,
            other => PixelFormat::Unknown(other),
        }
    }
}

// postcard writes an enum tag as a varint u32, so (de)serialising the code as a u32 gives the same
// bytes as the derived enum did, for every value.
impl Serialize for PixelFormat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> core::result::Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.code())
    }
}

impl<'de> Deserialize<'de> for PixelFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> core::result::Result<Self, D::Error> {
        u32::deserialize(deserializer).map(PixelFormat::from_code)
    }
}

/// Probe → edge greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Free-form probe identifier (serial number, model).
    pub probe_id: String<MAX_NAME_BYTES>,
    /// Width of the frames that will follow.
    pub frame_width: u16,
    /// Height of the frames that will follow.
    pub frame_height: u16,
    /// Pixel encoding.
    pub pixel_format: PixelFormat,
    /// Largest chunk payload the probe will send (bytes).
    pub max_chunk: u32,
}

/// Edge → probe answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Name of the model bundle that will run.
    pub model: String<MAX_NAME_BYTES>,
    /// Number of classes in every result.
    pub classes: u8,
    /// Largest wire packet the edge accepts (bytes, COBS and terminator included).
    pub max_packet: u32,
}

/// A run of pixels of frame `seq`, starting at byte `offset` of the row-major frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameChunk<'a> {
    /// Frame sequence number, increasing by one per frame (wraps).
    pub seq: u32,
    /// Acquisition time, microseconds on the probe's clock.
    pub timestamp_us: u64,
    /// Frame width.
    pub width: u16,
    /// Frame height.
    pub height: u16,
    /// Byte offset of `data` within the frame.
    pub offset: u32,
    /// The pixels.
    #[serde(borrow, with = "serde_bytes")]
    pub data: &'a [u8],
}

/// The centre-zoom box in frame pixels, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoomBox {
    /// First column.
    pub x0: u16,
    /// First row.
    pub y0: u16,
    /// One past the last column.
    pub x1: u16,
    /// One past the last row.
    pub y1: u16,
}

/// Edge → probe diagnosis for frame `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceResult {
    /// Sequence number of the frame this answers.
    pub seq: u32,
    /// Most probable class (index into the model's label set).
    pub class_index: u8,
    /// Probability per class, summing to 1.
    pub probabilities: Vec<f32, MAX_CLASSES>,
    /// True when the top probability is below the refer threshold: show "uncertain — refer".
    pub uncertain: bool,
    /// Where the network zoomed in.
    pub zoom_box: ZoomBox,
    /// Heatmap width (cells).
    pub heatmap_width: u8,
    /// Heatmap height (cells).
    pub heatmap_height: u8,
    /// Attention heatmap, row-major, 255 = strongest, covering the cropped image area.
    pub heatmap: Vec<u8, MAX_HEATMAP_CELLS>,
    /// Time from the frame's last byte received to this result, microseconds.
    pub latency_us: u32,
}

/// Liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's uptime, milliseconds.
    pub uptime_ms: u32,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Tag 0: the packet's version byte is not ours.
    VersionMismatch,
    /// Tag 1: frame size zero, too large, or not what `Hello` announced.
    BadFrameGeometry,
    /// Tag 2: a chunk did not continue the frame being assembled.
    ChunkOutOfOrder,
    /// Tag 3: pixel format not supported.
    UnsupportedPixelFormat,
    /// Tag 4: inference failed for this frame.
    InferenceFailed,
    /// Tag 5: the sender is not ready (e.g. no `Hello` yet).
    NotReady,
    /// Tag 6: a packet longer than the receiver's `max_packet`; it was skipped to the next zero.
    PacketTooLarge,
    /// Tag 7: the CRC held but the body is no message this side knows (unknown tag or field value).
    UnknownMessage,
}

/// Edge → probe: frame `seq` was complete but not classified, because frame `newer` arrived before
/// the network was free (the edge always runs the newest frame; docs/protocol.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The frame that was not classified.
    pub seq: u32,
    /// The frame that replaced it.
    pub newer: u32,
}

/// Edge → probe: frame `seq` was complete and intact, but the frame gate refused it (no eye in
/// view: too small, blank, saturated, or unlike the training images; docs/protocol.md §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoEye {
    /// The frame that was not classified.
    pub seq: u32,
    /// Why: 0 too small, 1 blank, 2 saturated, 3 unlike the training images.
    pub reason: u8,
    /// The number behind it: shorter side (px), contrast, saturated fraction or distance.
    pub score: f32,
}

/// Error report, optionally tied to a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Frame the error concerns, if any.
    pub seq: Option<u32>,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail (truncated to fit).
    pub detail: String<MAX_DETAIL_BYTES>,
}

impl ErrorReport {
    /// Builds a report, truncating `detail` at a character boundary to fit.
    pub fn new(seq: Option<u32>, code: ErrorCode, detail: &str) -> Self {
        ErrorReport { seq, code, detail: truncated(detail) }
    }
}

/// `text` cut at a character boundary to fit `N` bytes.
pub fn truncated<const N: usize>(text: &str) -> String<N> {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = String::new();
    // Cannot fail: `end ≤ N` bytes.
    let _ = s.push_str(&text[..end]);
    s
}
