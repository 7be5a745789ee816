//! Image and DICOM files decode to the same 8-bit gray frames whatever their encoding.

use cdnet_shared::imageio::{GrayFrame, ImageReadError, read_gray_frames, write_gray_dicom};
use image::{ImageBuffer, Luma, Rgb};
use std::path::Path;

const W: u32 = 13;
const H: u32 = 7;

fn gray_pixels(shift: u8) -> Vec<u8> {
    (0..W * H).map(|i| (i as u8).wrapping_mul(17).wrapping_add(shift)).collect()
}

fn write_dicom(path: &Path, frames: &[Vec<u8>]) {
    let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    write_gray_dicom(path, W as u16, H as u16, &frames).unwrap();
}

fn only_frame(path: &Path) -> GrayFrame {
    let mut frames = read_gray_frames(path).unwrap();
    assert_eq!(frames.len(), 1, "{}", path.display());
    frames.remove(0)
}

#[test]
fn png_bmp_8_and_16_bit_gray_and_rgb_decode_to_the_same_gray() {
    let dir = tempfile::tempdir().unwrap();
    let px = gray_pixels(3);
    let gray = ImageBuffer::<Luma<u8>, _>::from_raw(W, H, px.clone()).unwrap();
    gray.save(dir.path().join("a.png")).unwrap();
    gray.save(dir.path().join("a.bmp")).unwrap();
    let wide: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_raw(W, H, px.iter().map(|&v| v as u16 * 257).collect()).unwrap();
    wide.save(dir.path().join("a16.png")).unwrap();
    let rgb: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_raw(W, H, px.iter().flat_map(|&v| [v, v, v]).collect()).unwrap();
    rgb.save(dir.path().join("rgb.PNG")).unwrap();
    for name in ["a.png", "a.bmp", "a16.png", "rgb.PNG"] {
        let f = only_frame(&dir.path().join(name));
        assert_eq!((f.width, f.height), (W, H), "{name}");
        assert_eq!(f.pixels, px, "{name}");
    }
    // JPEG is lossy: close, not equal.
    gray.save(dir.path().join("a.jpg")).unwrap();
    let f = only_frame(&dir.path().join("a.jpg"));
    let err = f.pixels.iter().zip(&px).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(err < 60, "jpeg error {err}");
}

#[test]
fn dicom_single_and_multi_frame() {
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<Vec<u8>> = (0..3).map(|k| gray_pixels(k * 50)).collect();
    write_dicom(&dir.path().join("one.dcm"), &frames[..1]);
    write_dicom(&dir.path().join("three.dcm"), &frames);
    let one = read_gray_frames(&dir.path().join("one.dcm")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].width, one[0].height), (W, H));
    let three = read_gray_frames(&dir.path().join("three.dcm")).unwrap();
    assert_eq!(three.len(), 3);
    // Frames are distinct and in order; 8-bit MONOCHROME2 without a VOI window keeps its values.
    for (got, want) in three.iter().zip(&frames) {
        assert_eq!(&got.pixels, want);
    }
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = read_gray_frames(&corrupt).unwrap_err();
    assert!(matches!(err, ImageReadError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("corrupt.png"), "{err}");
    let empty = dir.path().join("empty.dcm");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(read_gray_frames(&empty), Err(ImageReadError::Decode { .. })));
    let missing = dir.path().join("missing.png");
    assert!(matches!(read_gray_frames(&missing), Err(ImageReadError::Io { .. })));
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, b"hello").unwrap();
    assert!(matches!(read_gray_frames(&txt), Err(ImageReadError::Unsupported { .. })));
}
