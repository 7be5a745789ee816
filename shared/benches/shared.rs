//! Codec throughput (encode / decode + reassembly of a whole frame) and preprocessing time.
//! Floors (docs/performance.md): ≥ 500 MB/s each way; 640×480 → 224² preprocessing ≤ 2 ms.

use cdnet_shared::preprocess::preprocess_chw;
use cdnet_shared::protocol::frames::{FrameAssembler, frame_chunks};
use cdnet_shared::protocol::{FrameDecoder, MAX_CHUNK_BYTES, MAX_RAW_PACKET, MAX_WIRE_PACKET, Message, encode_packet};
use cdnet_shared::{GrayImage, PreprocessConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn frame(w: usize, h: usize) -> Vec<u8> {
    // Speckle-like content with zeros in it (zeros are what COBS has to work around).
    (0..w * h).map(|i| ((i * 2_654_435_761usize) >> 13) as u8 & 0xF7).collect()
}

fn encode_frame(pixels: &[u8], w: u16, h: u16, scratch: &mut [u8], out: &mut Vec<u8>) {
    out.clear();
    let mut packet = vec![0u8; MAX_WIRE_PACKET];
    for chunk in frame_chunks(1, 0, w, h, pixels, MAX_CHUNK_BYTES) {
        let n = encode_packet(&Message::FrameChunk(chunk), scratch, &mut packet).unwrap();
        out.extend_from_slice(&packet[..n]);
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for (w, h) in [(224usize, 224usize), (640, 480)] {
        let pixels = frame(w, h);
        let mut scratch = vec![0u8; MAX_RAW_PACKET];
        let mut wire = Vec::with_capacity(w * h * 2);
        group.throughput(Throughput::Bytes((w * h) as u64));
        group.bench_function(format!("encode_{w}x{h}"), |b| {
            b.iter(|| encode_frame(black_box(&pixels), w as u16, h as u16, &mut scratch, &mut wire))
        });
        encode_frame(&pixels, w as u16, h as u16, &mut scratch, &mut wire);
        let mut decoder = Box::new(FrameDecoder::<MAX_WIRE_PACKET>::new());
        let mut assembler = FrameAssembler::new();
        group.bench_function(format!("decode_{w}x{h}"), |b| {
            b.iter(|| {
                let mut rest = black_box(&wire[..]);
                let mut done = None;
                while !rest.is_empty() {
                    let (used, event) = decoder.feed(rest);
                    if let Some(Ok(Message::FrameChunk(chunk))) = event {
                        done = assembler.push(&chunk).unwrap();
                    }
                    rest = &rest[used..];
                }
                assert!(done.is_some());
                done
            })
        });
    }
    group.finish();
}

fn preprocessing(c: &mut Criterion) {
    let pixels = frame(640, 480);
    let image = GrayImage::new(640, 480, &pixels).unwrap();
    let config = PreprocessConfig::default();
    let mut out = vec![0.0f32; 3 * 224 * 224];
    c.bench_function("preprocess_640x480_to_3x224x224", |b| {
        b.iter(|| preprocess_chw(black_box(&image), &config, &mut out).unwrap())
    });
}

criterion_group!(benches, codec, preprocessing);
criterion_main!(benches);
