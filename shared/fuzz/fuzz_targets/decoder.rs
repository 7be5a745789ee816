//! Fuzzes the streaming decoder, the frame assembler and the edge's session state machine.
//!
//! The first byte picks a mode. In stream mode the rest of the input is fed as raw wire bytes, split
//! at an arbitrary point. In envelope mode the input is wrapped in a valid version + CRC + COBS
//! packet, so that the message parser behind the CRC check sees arbitrary bodies too. Properties:
//! nothing panics; every byte is consumed and counted; whatever decodes re-encodes to a packet that
//! decodes to the same bytes.
#![no_main]

use cdnet_shared::CropProfile;
use cdnet_shared::protocol::frames::FrameAssembler;
use cdnet_shared::protocol::session::{EdgeSession, Reaction};
use cdnet_shared::protocol::{FrameDecoder, MAX_WIRE_PACKET, Message, PROTOCOL_VERSION, Ready, encode_packet_vec, truncated};
use libfuzzer_sys::fuzz_target;

fn envelope(body: &[u8]) -> Vec<u8> {
    let mut raw = vec![PROTOCOL_VERSION];
    raw.extend_from_slice(body);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    let mut wire = cobs::encode_vec(&raw);
    wire.push(0);
    wire
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let stream = if mode & 1 == 1 { envelope(bytes) } else { bytes.to_vec() };
    let mut decoder = Box::new(FrameDecoder::<2048>::new());
    let mut assembler = FrameAssembler::new();
    let ready = Ready { model: truncated("fuzz"), classes: 5, max_packet: MAX_WIRE_PACKET as u32 };
    let mut session = EdgeSession::new(ready, CropProfile::FULL);
    let cut = (mode as usize >> 1).min(stream.len());
    for part in [&stream[..cut], &stream[cut..]] {
        let mut rest = part;
        while !rest.is_empty() {
            let (used, event) = decoder.feed(rest);
            assert!(used > 0 && used <= rest.len());
            if let Some(packet) = event.clone() {
                // Every reply the session asks for must itself be a packet the probe can decode.
                match session.on_packet(packet) {
                    Reaction::Refuse(report) => {
                        encode_packet_vec(&Message::Error(report)).expect("refusals encode");
                    }
                    Reaction::Frame(frame) => assert_eq!(frame.pixels.len(), frame.width as usize * frame.height as usize),
                    _ => {}
                }
            }
            if let Some(Ok(message)) = event {
                let wire = encode_packet_vec(&message).expect("decoded messages re-encode");
                let mut again = Box::new(FrameDecoder::<4096>::new());
                let (n, back) = again.feed(&wire);
                assert_eq!(n, wire.len());
                let back = back.expect("one packet").expect("re-encoded packet decodes");
                assert_eq!(encode_packet_vec(&back).unwrap(), wire);
                if let Message::FrameChunk(chunk) = &message {
                    let _ = assembler.push(chunk);
                }
            }
            rest = &rest[used..];
        }
    }
    assert_eq!(decoder.stats().bytes, stream.len() as u64);
});
