//! Protocol properties: every message round-trips, and a corrupted stream never yields a corrupted
//! message while every intact packet still decodes.

use cdnet_shared::MAX_CLASSES;
use cdnet_shared::protocol::frames::{FrameAssembler, frame_chunks};
use cdnet_shared::protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

type BigDecoder = FrameDecoder<MAX_WIRE_PACKET>;

fn text<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    ".{0,40}".prop_map(|s: String| truncated::<N>(&s))
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::VersionMismatch),
        Just(ErrorCode::BadFrameGeometry),
        Just(ErrorCode::ChunkOutOfOrder),
        Just(ErrorCode::UnsupportedPixelFormat),
        Just(ErrorCode::InferenceFailed),
        Just(ErrorCode::NotReady),
        Just(ErrorCode::PacketTooLarge),
        Just(ErrorCode::UnknownMessage),
    ]
}

/// Every message kind except `FrameChunk` (which borrows; covered by `frame_chunks_round_trip`).
fn owned_message() -> impl Strategy<Value = Message<'static>> {
    let hello = (text(), any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
        |(probe_id, w, h, format, max_chunk)| {
            let pixel_format = PixelFormat::from_code(format % 3);
            Message::Hello(Hello { probe_id, frame_width: w, frame_height: h, pixel_format, max_chunk })
        },
    );
    let ready = (text(), any::<u8>(), any::<u32>())
        .prop_map(|(model, classes, max_packet)| Message::Ready(Ready { model, classes, max_packet }));
    let result = (
        any::<u32>(),
        any::<u8>(),
        vec(any::<f32>(), 0..=MAX_CLASSES),
        any::<bool>(),
        any::<[u16; 4]>(),
        any::<(u8, u8)>(),
        vec(any::<u8>(), 0..=MAX_HEATMAP_CELLS),
        any::<u32>(),
    )
        .prop_map(|(seq, class_index, probs, uncertain, b, (hw, hh), heat, latency_us)| {
            Message::Result(InferenceResult {
                seq,
                class_index,
                probabilities: heapless::Vec::from_slice(&probs).unwrap(),
                uncertain,
                zoom_box: ZoomBox { x0: b[0], y0: b[1], x1: b[2], y1: b[3] },
                heatmap_width: hw,
                heatmap_height: hh,
                heatmap: heapless::Vec::from_slice(&heat).unwrap(),
                latency_us,
            })
        });
    let heartbeat = any::<u32>().prop_map(|uptime_ms| Message::Heartbeat(Heartbeat { uptime_ms }));
    let error = (proptest::option::of(any::<u32>()), error_code(), text())
        .prop_map(|(seq, code, detail)| Message::Error(ErrorReport { seq, code, detail }));
    let skipped = any::<(u32, u32)>().prop_map(|(seq, newer)| Message::Skipped(Skipped { seq, newer }));
    prop_oneof![hello, ready, result, heartbeat, error, skipped]
}

/// Decodes a whole stream; returns each decoded message re-encoded (so it outlives the decoder's
/// buffer) and the decoder.
fn decode_all(stream: &[u8]) -> (Vec<Vec<u8>>, Box<BigDecoder>) {
    let mut dec = Box::new(BigDecoder::new());
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (used, event) = dec.feed(rest);
        if let Some(Ok(message)) = event {
            out.push(encode_packet_vec(&message).unwrap());
        }
        rest = &rest[used..];
    }
    (out, dec)
}

proptest! {
    #[test]
    fn every_message_round_trips(message in owned_message()) {
        let wire = encode_packet_vec(&message).unwrap();
        prop_assert_eq!(*wire.last().unwrap(), 0);
        prop_assert!(!wire[..wire.len() - 1].contains(&0));
        let mut dec = Box::new(BigDecoder::new());
        let (used, event) = dec.feed(&wire);
        prop_assert_eq!(used, wire.len());
        match event {
            Some(Ok(decoded)) => {
                // NaN probabilities never compare equal, so compare the re-encoded bytes too.
                prop_assert_eq!(encode_packet_vec(&decoded).unwrap(), wire);
                if let (Message::Result(a), Message::Result(b)) = (&decoded, &message) {
                    prop_assert_eq!(a.heatmap.as_slice(), b.heatmap.as_slice());
                } else {
                    prop_assert_eq!(&decoded, &message);
                }
            }
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    #[test]
    fn frame_chunks_round_trip(
        seq in any::<u32>(),
        ts in any::<u64>(),
        w in 1u16..=300,
        h in 1u16..=200,
        chunk in 1usize..=70_000,
        fill in any::<u8>(),
    ) {
        let pixels: Vec<u8> =
            (0..w as usize * h as usize).map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill)).collect();
        let chunk = chunk.min(MAX_CHUNK_BYTES);
        let mut stream = vec![0u8];
        for c in frame_chunks(seq, ts, w, h, &pixels, chunk) {
            stream.extend(encode_packet_vec(&Message::FrameChunk(c)).unwrap());
        }
        let mut dec = Box::new(BigDecoder::new());
        let mut asm = FrameAssembler::new();
        let mut frames = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let (used, event) = dec.feed(rest);
            if let Some(Ok(Message::FrameChunk(c))) = event
                && let Some(f) = asm.push(&c).unwrap()
            {
                frames.push(f);
            }
            rest = &rest[used..];
        }
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(&frames[0].pixels, &pixels);
        prop_assert_eq!((frames[0].seq, frames[0].timestamp_us), (seq, ts));
        prop_assert_eq!(dec.stats().errors(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        let mut dec = FrameDecoder::<512>::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (used, _) = dec.feed(rest);
            prop_assert!(used > 0);
            rest = &rest[used..];
        }
        prop_assert_eq!(dec.stats().bytes, bytes.len() as u64);
    }
}

/// 2 000 packets (frame chunks and results), corrupted at 1e-3 per byte by bit flips, dropped
/// bytes and duplicated bytes. A packet counts as intact when neither its bytes nor the zero
/// delimiters on both sides were touched; exactly the intact packets must come out, unchanged.
#[test]
fn corrupted_stream_rejects_every_corrupted_packet_and_keeps_every_intact_one() {
    let mut rng = StdRng::seed_from_u64(0x0c0b_5eed);
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let pixels: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    for seq in 0..2000u32 {
        let message = if seq % 3 == 0 {
            Message::Result(InferenceResult {
                seq,
                class_index: (seq % 5) as u8,
                probabilities: heapless::Vec::from_slice(&[0.1, 0.2, 0.3, 0.2, 0.2]).unwrap(),
                uncertain: false,
                zoom_box: ZoomBox { x0: 1, y0: 2, x1: 3, y1: 4 },
                heatmap_width: 7,
                heatmap_height: 7,
                heatmap: heapless::Vec::from_slice(&pixels[..49]).unwrap(),
                latency_us: seq,
            })
        } else {
            let len = 100 + (seq as usize * 37) % 1500;
            Message::FrameChunk(FrameChunk {
                seq,
                timestamp_us: seq as u64,
                width: 64,
                height: 64,
                offset: 0,
                data: &pixels[..len],
            })
        };
        packets.push(encode_packet_vec(&message).unwrap());
    }

    // Stream = 0, p0, p1, ... (each packet ends with its own zero). Remember which clean bytes
    // each packet spans, from the zero before it to its own zero.
    let mut clean = vec![0u8];
    let mut spans = Vec::new();
    for p in &packets {
        let start = clean.len() - 1;
        clean.extend_from_slice(p);
        spans.push((start, clean.len() - 1));
    }
    let mut touched = vec![false; clean.len()];
    let mut noisy = Vec::with_capacity(clean.len());
    let (mut flips, mut drops, mut dups) = (0, 0, 0);
    for (i, &b) in clean.iter().enumerate() {
        let r: f64 = rng.random();
        if r < 1e-3 / 3.0 {
            touched[i] = true;
            flips += 1;
            noisy.push(b ^ (1 << rng.random_range(0..8)));
        } else if r < 2e-3 / 3.0 {
            touched[i] = true;
            drops += 1;
        } else if r < 1e-3 {
            touched[i] = true;
            dups += 1;
            noisy.push(b);
            noisy.push(b);
        } else {
            noisy.push(b);
        }
    }
    let intact: Vec<&Vec<u8>> =
        packets.iter().zip(&spans).filter(|(_, (a, b))| !touched[*a..=*b].iter().any(|&t| t)).map(|(p, _)| p).collect();
    let corrupted = packets.len() - intact.len();
    assert!(corrupted > 100, "the test must actually corrupt packets (got {corrupted})");
    assert!(flips > 0 && drops > 0 && dups > 0);

    let (decoded, dec) = decode_all(&noisy);
    let stats = dec.stats();
    // Every decoded packet is byte-identical to an intact one, in order, and none is missing.
    assert_eq!(decoded.len(), intact.len(), "stats: {stats:?}");
    for (d, p) in decoded.iter().zip(&intact) {
        assert_eq!(d, *p);
    }
    assert_eq!(stats.packets as usize, intact.len());
    // Neighbouring corrupted packets can merge into one rejected packet, so errors ≤ corrupted.
    assert!(stats.errors() as usize >= corrupted / 2, "errors are counted: {stats:?}");
    assert_eq!(stats.bytes as usize, noisy.len());
}

#[test]
fn wrong_version_and_garbage_are_counted_separately() {
    let wire = encode_packet_vec(&Message::Heartbeat(Heartbeat { uptime_ms: 1 })).unwrap();
    // The same packet with version byte 2 and a correct CRC.
    let mut raw = wire[..wire.len() - 1].to_vec();
    let n = cobs::decode_in_place(&mut raw).unwrap();
    raw.truncate(n);
    raw[0] = 2;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&raw[..n - 4]);
    raw[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let mut v2 = cobs::encode_vec(&raw);
    v2.push(0);
    let mut stream = b"\x13\x37garbage\x00".to_vec();
    stream.extend(&v2);
    stream.extend(&wire);
    let (decoded, dec) = decode_all(&stream);
    assert_eq!(decoded, vec![wire]);
    let s = dec.stats();
    assert_eq!((s.version, s.packets), (1, 1));
    assert_eq!(s.cobs + s.crc + s.too_short, 1);
}

#[test]
fn overflow_resynchronises_at_the_next_zero() {
    let wire = encode_packet_vec(&Message::Heartbeat(Heartbeat { uptime_ms: 9 })).unwrap();
    let mut stream = vec![0x55u8; 1000];
    stream.push(0);
    stream.extend(&wire);
    let mut dec = FrameDecoder::<64>::new();
    let mut events = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let (used, ev) = dec.feed(rest);
        if let Some(ev) = ev {
            events.push(ev.map(|m| matches!(m, Message::Heartbeat(Heartbeat { uptime_ms: 9 }))));
        }
        rest = &rest[used..];
    }
    assert_eq!(events, vec![Err(PacketError::Overflow), Ok(true)]);
}

/// The example packet printed in docs/protocol.md, so the document cannot go stale.
#[test]
fn documented_example_packet() {
    let pixels = [0u8, 1, 2, 3, 0, 255];
    let message = Message::FrameChunk(FrameChunk {
        seq: 300,
        timestamp_us: 1_000_000,
        width: 3,
        height: 2,
        offset: 0,
        data: &pixels,
    });
    let wire = encode_packet_vec(&message).unwrap();
    let hex: Vec<String> = wire.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex.join(" "), include_str!("../../docs/protocol-example.hex").trim());
}

#[test]
fn documented_limits() {
    // docs/protocol.md §1 quotes these numbers.
    assert_eq!(MAX_CHUNK_BYTES, 65_536);
    assert_eq!(MAX_RAW_PACKET, 65_600);
    assert_eq!(MAX_WIRE_PACKET, 65_861);
    let chunk = vec![0xABu8; MAX_CHUNK_BYTES];
    let biggest = Message::FrameChunk(FrameChunk {
        seq: u32::MAX,
        timestamp_us: u64::MAX,
        width: u16::MAX,
        height: u16::MAX,
        offset: u32::MAX,
        data: &chunk,
    });
    assert!(encode_packet_vec(&biggest).unwrap().len() <= MAX_WIRE_PACKET);
}

/// `pixel_format` is an enum tag on the wire; a tag this side does not know still parses (so the edge
/// can answer `UnsupportedPixelFormat`), and Gray8 keeps the bytes the derived enum wrote.
#[test]
fn unknown_pixel_format_parses_and_gray8_keeps_its_bytes() {
    let hello = |pixel_format| {
        Message::Hello(Hello { probe_id: truncated("p"), frame_width: 3, frame_height: 2, pixel_format, max_chunk: 6 })
    };
    let gray = encode_packet_vec(&hello(PixelFormat::Gray8)).unwrap();
    // raw = 01 | 00 tag Hello | 01 'p' | 03 | 02 | 00 Gray8 | 06 | CRC
    let mut decoder = BigDecoder::new();
    let (_, event) = decoder.feed(&gray);
    assert_eq!(event, Some(Ok(hello(PixelFormat::Gray8))));
    let raw = [0x01, 0x00, 0x01, b'p', 0x03, 0x02, 0x00, 0x06];
    assert_eq!(cobs::decode_vec(&gray[..gray.len() - 1]).unwrap()[..8], raw);
    for code in [1u32, 200, u32::MAX] {
        let wire = encode_packet_vec(&hello(PixelFormat::Unknown(code))).unwrap();
        let (_, event) = decoder.feed(&wire);
        assert_eq!(event, Some(Ok(hello(PixelFormat::from_code(code)))), "code {code}");
    }
}

/// Bytes after the last known field are ignored, so a later revision can append a field; a body
/// cut short is still malformed.
#[test]
fn appended_bytes_are_ignored_and_a_short_body_is_not() {
    let with_crc = |body: &[u8]| {
        let mut raw = vec![PROTOCOL_VERSION];
        raw.extend_from_slice(body);
        let crc = crc32(&raw);
        raw.extend_from_slice(&crc.to_le_bytes());
        raw
    };
    // Heartbeat { uptime_ms: 5 } followed by two bytes of a future field.
    let extended = with_crc(&[0x04, 0x05, 0xaa, 0xbb]);
    assert_eq!(decode_packet(&extended), Ok(Message::Heartbeat(Heartbeat { uptime_ms: 5 })));
    // A Skipped with its `newer` field missing.
    let short = with_crc(&[0x06, 0x07]);
    assert_eq!(decode_packet(&short), Err(PacketError::Malformed));
}

/// CRC-32/ISO-HDLC, bit by bit, as docs/protocol.md §1 defines it (independent of the codec's tables).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
