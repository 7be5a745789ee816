//! Frames ⇄ chunks: a probe with a few KB of RAM sends a frame as many small [`FrameChunk`]s; the
//! edge reassembles them and rejects anything that is not a complete, in-order frame.

use super::{FrameChunk, MAX_FRAME_SIDE};
use alloc::vec::Vec;

/// Splits a frame's pixels into chunks of at most `max_chunk` bytes (at least 1).
pub fn frame_chunks<'a>(
    seq: u32,
    timestamp_us: u64,
    width: u16,
    height: u16,
    pixels: &'a [u8],
    max_chunk: usize,
) -> impl Iterator<Item = FrameChunk<'a>> + 'a {
    pixels.chunks(max_chunk.max(1)).enumerate().map(move |(i, data)| FrameChunk {
        seq,
        timestamp_us,
        width,
        height,
        offset: (i * max_chunk.max(1)) as u32,
        data,
    })
}

/// A complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Sequence number.
    pub seq: u32,
    /// Probe timestamp, microseconds.
    pub timestamp_us: u64,
    /// Width.
    pub width: u16,
    /// Height.
    pub height: u16,
    /// Row-major 8-bit pixels, `width × height` bytes.
    pub pixels: Vec<u8>,
}

/// Why a chunk was refused (the frame it belonged to is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// Zero or oversized width/height.
    #[error("frame {seq}: size {width}×{height} is zero or larger than {MAX_FRAME_SIDE}")]
    Geometry {
        /// Frame.
        seq: u32,
        /// Width.
        width: u16,
        /// Height.
        height: u16,
    },
    /// The chunk does not continue the frame being assembled (a chunk was lost).
    #[error("frame {seq}: chunk at offset {offset} does not continue the frame (expected {expected})")]
    OutOfOrder {
        /// Frame of the chunk.
        seq: u32,
        /// Offset of the chunk.
        offset: u32,
        /// Offset that was expected.
        expected: u32,
    },
    /// The chunk runs past the end of the frame.
    #[error("frame {seq}: chunk ends at byte {end}, past the frame's {len} bytes")]
    Overrun {
        /// Frame.
        seq: u32,
        /// End of the chunk.
        end: usize,
        /// Frame length.
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    seq: u32,
    timestamp_us: u64,
    width: u16,
    height: u16,
}

/// Rebuilds frames from chunks. Memory is bounded by one frame of at most
/// `MAX_FRAME_SIDE²` bytes.
#[derive(Debug, Default)]
pub struct FrameAssembler {
    current: Option<Header>,
    pixels: Vec<u8>,
    abandoned: u64,
}

impl FrameAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames dropped because a new frame started before they were complete (their last chunk was
    /// lost).
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// Adds a chunk; returns the frame when this chunk completes it.
    pub fn push(&mut self, chunk: &FrameChunk<'_>) -> Result<Option<Frame>, AssemblyError> {
        let header =
            Header { seq: chunk.seq, timestamp_us: chunk.timestamp_us, width: chunk.width, height: chunk.height };
        if chunk.width == 0 || chunk.height == 0 || chunk.width > MAX_FRAME_SIDE || chunk.height > MAX_FRAME_SIDE {
            self.drop_current();
            return Err(AssemblyError::Geometry { seq: chunk.seq, width: chunk.width, height: chunk.height });
        }
        let len = chunk.width as usize * chunk.height as usize;
        if chunk.offset == 0 {
            if self.current.is_some() {
                self.abandoned += 1;
            }
            self.current = Some(header);
            self.pixels.clear();
            self.pixels.reserve(len);
        } else if self.current != Some(header) || chunk.offset as usize != self.pixels.len() {
            let expected = if self.current == Some(header) { self.pixels.len() as u32 } else { 0 };
            self.drop_current();
            return Err(AssemblyError::OutOfOrder { seq: chunk.seq, offset: chunk.offset, expected });
        }
        let end = self.pixels.len() + chunk.data.len();
        if end > len {
            self.drop_current();
            return Err(AssemblyError::Overrun { seq: chunk.seq, end, len });
        }
        self.pixels.extend_from_slice(chunk.data);
        if end < len {
            return Ok(None);
        }
        self.current = None;
        Ok(Some(Frame {
            seq: header.seq,
            timestamp_us: header.timestamp_us,
            width: header.width,
            height: header.height,
            pixels: core::mem::take(&mut self.pixels),
        }))
    }

    fn drop_current(&mut self) {
        self.current = None;
        self.pixels.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble() {
        let px: Vec<u8> = (0..=255).cycle().take(30 * 20).map(|v: u32| v as u8).collect();
        let mut asm = FrameAssembler::new();
        let mut out = None;
        for c in frame_chunks(9, 1234, 30, 20, &px, 64) {
            assert!(out.is_none());
            out = asm.push(&c).unwrap();
        }
        let f = out.unwrap();
        assert_eq!((f.seq, f.timestamp_us, f.width, f.height), (9, 1234, 30, 20));
        assert_eq!(f.pixels, px);
    }

    #[test]
    fn a_lost_chunk_drops_the_frame_and_the_next_frame_still_arrives() {
        let px = [7u8; 100];
        let mut asm = FrameAssembler::new();
        let chunks: Vec<_> = frame_chunks(1, 0, 10, 10, &px, 30).collect();
        assert_eq!(asm.push(&chunks[0]), Ok(None));
        assert!(matches!(asm.push(&chunks[2]), Err(AssemblyError::OutOfOrder { .. })));
        assert!(matches!(asm.push(&chunks[3]), Err(AssemblyError::OutOfOrder { .. })));
        // Next frame whole.
        let mut last = None;
        for c in frame_chunks(2, 0, 10, 10, &px, 30) {
            last = asm.push(&c).unwrap();
        }
        assert_eq!(last.unwrap().seq, 2);
    }

    #[test]
    fn a_lost_last_chunk_is_counted_as_abandoned() {
        let px = [7u8; 100];
        let mut asm = FrameAssembler::new();
        let chunks: Vec<_> = frame_chunks(1, 0, 10, 10, &px, 60).collect();
        assert_eq!(asm.push(&chunks[0]), Ok(None));
        let next: Vec<_> = frame_chunks(2, 0, 10, 10, &px, 60).collect();
        assert_eq!(asm.push(&next[0]), Ok(None));
        assert_eq!(asm.abandoned(), 1);
        assert_eq!(asm.push(&next[1]).unwrap().unwrap().seq, 2);
    }

    #[test]
    fn bad_geometry_and_overrun() {
        let mut asm = FrameAssembler::new();
        let c = FrameChunk { seq: 1, timestamp_us: 0, width: 0, height: 5, offset: 0, data: &[1] };
        assert!(matches!(asm.push(&c), Err(AssemblyError::Geometry { .. })));
        let c = FrameChunk { seq: 1, timestamp_us: 0, width: 5000, height: 5, offset: 0, data: &[1] };
        assert!(matches!(asm.push(&c), Err(AssemblyError::Geometry { .. })));
        let c = FrameChunk { seq: 1, timestamp_us: 0, width: 2, height: 2, offset: 0, data: &[1; 5] };
        assert!(matches!(asm.push(&c), Err(AssemblyError::Overrun { .. })));
    }
}
