//! The edge's side of a probe session (docs/protocol.md §3) as a pure state machine: decoded
//! packets in, what to send and what to classify out. No port, thread or clock: the edge's receiver
//! feeds it every packet the decoder reports and acts on the [`Reaction`], so each session rule is
//! tested here without a serial link.
//!
//! The rules, in the order a packet meets them:
//! * an intact packet of another version, one longer than the edge accepts, or an intact body that
//!   is no known message is answered with an `Error` (`seq` none); corrupted packets (COBS, length,
//!   CRC) are only counted by the decoder, since nothing in them can be trusted;
//! * a `Hello` binds the frame size, pixel format and chunk limit until the next `Hello` or the
//!   link closes; one that could never be served is refused and leaves the session unbound;
//! * chunks are refused (one `Error` per frame, with its `seq`) before a `Hello` (`NotReady`), when
//!   their frame differs from the `Hello`'s size or a chunk exceeds its `max_chunk`
//!   (`BadFrameGeometry`), or when they do not continue the frame (`ChunkOutOfOrder`).

use super::frames::{AssemblyError, Frame, FrameAssembler};
use super::{
    ErrorCode, ErrorReport, FrameChunk, Hello, MAX_CHUNK_BYTES, MAX_FRAME_SIDE, MAX_WIRE_PACKET, Message,
    PROTOCOL_VERSION, PacketError, PixelFormat, Ready,
};
use crate::CropProfile;
use crate::preprocess::usable_crop;
use alloc::format;
use alloc::string::String;

/// What the receiver does with one packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Reaction {
    /// Nothing to send: a heartbeat, part of a frame, a corrupted packet, a repeated refusal.
    Quiet,
    /// The `Hello` was accepted: send this `Ready`.
    Ready(Ready),
    /// A complete frame of the bound size, to classify.
    Frame(Frame),
    /// Send this `Error`. A report with a `seq` refuses that frame; one without refuses a packet
    /// or a `Hello`.
    Refuse(ErrorReport),
    /// The probe reported an error of its own (log it).
    ProbeError(ErrorReport),
}

/// What a `Hello` bound: the frames that may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    width: u16,
    height: u16,
    max_chunk: u32,
}

/// One probe session on the edge.
#[derive(Debug)]
pub struct EdgeSession {
    ready: Ready,
    crop: CropProfile,
    binding: Option<Binding>,
    assembler: FrameAssembler,
    /// The last frame refused, so its later chunks are dropped without another `Error`.
    refused_seq: Option<u32>,
}

impl EdgeSession {
    /// A session that answers an acceptable `Hello` with `ready` and serves frames whose device
    /// crop `crop` leaves enough pixels for the network.
    pub fn new(ready: Ready, crop: CropProfile) -> Self {
        EdgeSession { ready, crop, binding: None, assembler: FrameAssembler::new(), refused_seq: None }
    }

    /// Forgets the probe (the link closed): the next probe must say `Hello` again.
    pub fn reset(&mut self) {
        self.binding = None;
        self.assembler = FrameAssembler::new();
        self.refused_seq = None;
    }

    /// Whether a `Hello` is in force.
    pub fn is_bound(&self) -> bool {
        self.binding.is_some()
    }

    /// Applies the session rules to one packet the decoder reported.
    pub fn on_packet(&mut self, packet: Result<Message<'_>, PacketError>) -> Reaction {
        match packet {
            Ok(Message::Hello(hello)) => self.on_hello(&hello),
            Ok(Message::FrameChunk(chunk)) => self.on_chunk(&chunk),
            Ok(Message::Error(report)) => Reaction::ProbeError(report),
            Ok(_) => Reaction::Quiet,
            Err(error) => packet_refusal(error).map_or(Reaction::Quiet, Reaction::Refuse),
        }
    }

    fn on_hello(&mut self, hello: &Hello) -> Reaction {
        match self.hello_problem(hello) {
            Ok(binding) => {
                self.binding = Some(binding);
                self.assembler = FrameAssembler::new();
                self.refused_seq = None;
                Reaction::Ready(self.ready.clone())
            }
            Err((code, detail)) => {
                // Fail closed: frames of the previous Hello's size are not served after a refused one.
                self.reset();
                Reaction::Refuse(ErrorReport::new(None, code, &detail))
            }
        }
    }

    /// The binding an acceptable `Hello` makes, or why it cannot be served.
    fn hello_problem(&self, hello: &Hello) -> Result<Binding, (ErrorCode, String)> {
        let (w, h) = (hello.frame_width, hello.frame_height);
        if let PixelFormat::Unknown(code) = hello.pixel_format {
            let detail = format!("pixel_format {code} is not supported; send Gray8 (0)");
            return Err((ErrorCode::UnsupportedPixelFormat, detail));
        }
        if w == 0 || h == 0 || w > MAX_FRAME_SIDE || h > MAX_FRAME_SIDE {
            let detail = format!("Hello announces {w}x{h} frames; each side must be 1 to {MAX_FRAME_SIDE} pixels");
            return Err((ErrorCode::BadFrameGeometry, detail));
        }
        if let Err(e) = usable_crop(usize::from(w), usize::from(h), &self.crop) {
            return Err((ErrorCode::BadFrameGeometry, format!("Hello announces {w}x{h} frames: {e}")));
        }
        if hello.max_chunk == 0 || hello.max_chunk as usize > MAX_CHUNK_BYTES {
            let detail = format!("Hello max_chunk {} must be 1 to {MAX_CHUNK_BYTES} bytes", hello.max_chunk);
            return Err((ErrorCode::BadFrameGeometry, detail));
        }
        Ok(Binding { width: w, height: h, max_chunk: hello.max_chunk })
    }

    fn on_chunk(&mut self, chunk: &FrameChunk<'_>) -> Reaction {
        match self.chunk_problem(chunk) {
            Ok(()) => match self.assembler.push(chunk) {
                Ok(Some(frame)) => {
                    self.refused_seq = None;
                    Reaction::Frame(frame)
                }
                Ok(None) => Reaction::Quiet,
                Err(error) => {
                    let code = match error {
                        AssemblyError::OutOfOrder { .. } => ErrorCode::ChunkOutOfOrder,
                        AssemblyError::Geometry { .. } | AssemblyError::Overrun { .. } => ErrorCode::BadFrameGeometry,
                    };
                    self.refuse_frame(chunk.seq, code, &format!("{error}"))
                }
            },
            Err((code, detail)) => {
                if self.binding.is_some() {
                    // The frame in assembly (if it is this one) cannot complete any more.
                    self.assembler = FrameAssembler::new();
                }
                self.refuse_frame(chunk.seq, code, &detail)
            }
        }
    }

    /// Why a chunk cannot belong to a frame this session serves, before reassembly.
    fn chunk_problem(&self, chunk: &FrameChunk<'_>) -> Result<(), (ErrorCode, String)> {
        let Some(binding) = self.binding else {
            return Err((ErrorCode::NotReady, "no Hello yet: send Hello and wait for Ready before frames".into()));
        };
        let (w, h) = (binding.width, binding.height);
        if (chunk.width, chunk.height) != (w, h) {
            let detail = format!("frame is {}x{}, the probe announced {w}x{h}", chunk.width, chunk.height);
            return Err((ErrorCode::BadFrameGeometry, detail));
        }
        if chunk.data.len() > binding.max_chunk as usize {
            let detail = format!(
                "chunk of {} bytes exceeds the max_chunk {} the Hello announced",
                chunk.data.len(),
                binding.max_chunk
            );
            return Err((ErrorCode::BadFrameGeometry, detail));
        }
        Ok(())
    }

    /// One `Error` per refused frame; its later chunks are dropped quietly.
    fn refuse_frame(&mut self, seq: u32, code: ErrorCode, detail: &str) -> Reaction {
        if self.refused_seq == Some(seq) {
            return Reaction::Quiet;
        }
        self.refused_seq = Some(seq);
        Reaction::Refuse(ErrorReport::new(Some(seq), code, detail))
    }
}

/// The `Error` an intact-but-unusable packet gets; none for corruption, where nothing in the
/// packet (not even that it was meant for us) can be trusted.
fn packet_refusal(error: PacketError) -> Option<ErrorReport> {
    let (code, detail) = match error {
        PacketError::Version(version) => {
            (ErrorCode::VersionMismatch, format!("packet version {version}, this edge speaks {PROTOCOL_VERSION}"))
        }
        PacketError::Overflow => (
            ErrorCode::PacketTooLarge,
            format!("a packet exceeded {MAX_WIRE_PACKET} wire bytes (Ready.max_packet) and was skipped"),
        ),
        PacketError::Malformed => {
            (ErrorCode::UnknownMessage, "the CRC held but the body is no message this edge knows".into())
        }
        PacketError::Cobs | PacketError::TooShort | PacketError::Crc => return None,
    };
    Some(ErrorReport::new(None, code, &detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frames::frame_chunks;
    use crate::protocol::truncated;

    fn session() -> EdgeSession {
        let ready = Ready { model: truncated("test"), classes: 5, max_packet: MAX_WIRE_PACKET as u32 };
        EdgeSession::new(ready, CropProfile::FULL)
    }

    fn hello(width: u16, height: u16, pixel_format: PixelFormat, max_chunk: u32) -> Message<'static> {
        Message::Hello(Hello {
            probe_id: truncated("probe"),
            frame_width: width,
            frame_height: height,
            pixel_format,
            max_chunk,
        })
    }

    fn code(reaction: &Reaction) -> Option<(Option<u32>, ErrorCode)> {
        match reaction {
            Reaction::Refuse(report) => Some((report.seq, report.code)),
            _ => None,
        }
    }

    /// Feeds every chunk of a `width × height` frame; returns the reactions that were not quiet.
    fn send_frame(s: &mut EdgeSession, seq: u32, width: u16, height: u16, chunk: usize) -> alloc::vec::Vec<Reaction> {
        let pixels = alloc::vec![7u8; usize::from(width) * usize::from(height)];
        frame_chunks(seq, 0, width, height, &pixels, chunk)
            .map(|c| s.on_packet(Ok(Message::FrameChunk(c))))
            .filter(|r| *r != Reaction::Quiet)
            .collect()
    }

    #[test]
    fn a_frame_before_hello_is_refused_once_as_not_ready() {
        let mut s = session();
        let reactions = send_frame(&mut s, 4, 64, 64, 512);
        assert_eq!(reactions.len(), 1, "{reactions:?}");
        assert_eq!(code(&reactions[0]), Some((Some(4), ErrorCode::NotReady)));
    }

    #[test]
    fn hello_binds_the_size_and_frames_complete() {
        let mut s = session();
        assert!(matches!(s.on_packet(Ok(hello(64, 48, PixelFormat::Gray8, 1000))), Reaction::Ready(_)));
        let reactions = send_frame(&mut s, 1, 64, 48, 1000);
        assert!(matches!(&reactions[..], [Reaction::Frame(f)] if f.seq == 1 && f.pixels.len() == 64 * 48));
        let reactions = send_frame(&mut s, 2, 48, 64, 1000);
        assert_eq!(
            reactions.iter().map(code).collect::<alloc::vec::Vec<_>>(),
            [Some((Some(2), ErrorCode::BadFrameGeometry))]
        );
    }

    #[test]
    fn impossible_hellos_are_refused_and_unbind() {
        let mut s = session();
        assert!(matches!(s.on_packet(Ok(hello(64, 64, PixelFormat::Gray8, 512))), Reaction::Ready(_)));
        let cases = [
            (hello(64, 64, PixelFormat::Unknown(1), 512), ErrorCode::UnsupportedPixelFormat),
            (hello(0, 0, PixelFormat::Gray8, 512), ErrorCode::BadFrameGeometry),
            (hello(4097, 100, PixelFormat::Gray8, 512), ErrorCode::BadFrameGeometry),
            (hello(20, 20, PixelFormat::Gray8, 512), ErrorCode::BadFrameGeometry),
            (hello(64, 64, PixelFormat::Gray8, 0), ErrorCode::BadFrameGeometry),
            (hello(64, 64, PixelFormat::Gray8, MAX_CHUNK_BYTES as u32 + 1), ErrorCode::BadFrameGeometry),
        ];
        for (message, expected) in cases {
            assert_eq!(code(&s.on_packet(Ok(message.clone()))), Some((None, expected)), "{message:?}");
            assert!(!s.is_bound());
        }
        assert_eq!(code(&send_frame(&mut s, 9, 64, 64, 512)[0]), Some((Some(9), ErrorCode::NotReady)));
    }

    #[test]
    fn a_chunk_over_max_chunk_or_past_the_frame_is_bad_geometry() {
        let mut s = session();
        s.on_packet(Ok(hello(64, 64, PixelFormat::Gray8, 512)));
        let reactions = send_frame(&mut s, 3, 64, 64, 1024);
        assert_eq!(
            reactions.iter().map(code).collect::<alloc::vec::Vec<_>>(),
            [Some((Some(3), ErrorCode::BadFrameGeometry))]
        );
        // A 40 × 40 frame is 1 600 bytes: three full chunks, then one that runs 448 bytes past the end.
        s.on_packet(Ok(hello(40, 40, PixelFormat::Gray8, 512)));
        let data = [0u8; 512];
        let chunk = |offset: u32| FrameChunk { seq: 4, timestamp_us: 0, width: 40, height: 40, offset, data: &data };
        for offset in [0, 512, 1024] {
            assert_eq!(s.on_packet(Ok(Message::FrameChunk(chunk(offset)))), Reaction::Quiet);
        }
        let reaction = s.on_packet(Ok(Message::FrameChunk(chunk(1536))));
        assert_eq!(code(&reaction), Some((Some(4), ErrorCode::BadFrameGeometry)));
    }

    #[test]
    fn a_lost_chunk_is_out_of_order_once() {
        let mut s = session();
        s.on_packet(Ok(hello(64, 64, PixelFormat::Gray8, 512)));
        let pixels = alloc::vec![1u8; 64 * 64];
        let reactions: alloc::vec::Vec<_> = frame_chunks(5, 0, 64, 64, &pixels, 512)
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, c)| s.on_packet(Ok(Message::FrameChunk(c))))
            .filter(|r| *r != Reaction::Quiet)
            .collect();
        assert_eq!(
            reactions.iter().map(code).collect::<alloc::vec::Vec<_>>(),
            [Some((Some(5), ErrorCode::ChunkOutOfOrder))]
        );
        assert!(matches!(&send_frame(&mut s, 6, 64, 64, 512)[..], [Reaction::Frame(_)]));
    }

    #[test]
    fn intact_unusable_packets_are_answered_and_corruption_is_not() {
        let mut s = session();
        let answered = [
            (PacketError::Version(2), ErrorCode::VersionMismatch),
            (PacketError::Overflow, ErrorCode::PacketTooLarge),
            (PacketError::Malformed, ErrorCode::UnknownMessage),
        ];
        for (error, expected) in answered {
            assert_eq!(code(&s.on_packet(Err(error))), Some((None, expected)));
        }
        for error in [PacketError::Cobs, PacketError::TooShort, PacketError::Crc] {
            assert_eq!(s.on_packet(Err(error)), Reaction::Quiet);
        }
    }

    #[test]
    fn reset_forgets_the_probe() {
        let mut s = session();
        s.on_packet(Ok(hello(64, 64, PixelFormat::Gray8, 512)));
        s.reset();
        assert_eq!(code(&send_frame(&mut s, 1, 64, 64, 512)[0]), Some((Some(1), ErrorCode::NotReady)));
    }
}
