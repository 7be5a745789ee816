//! Image files → 8-bit grayscale frames, the one conversion both the host's data loader and the
//! edge's probe simulator use (so a frame streamed to the board is the image the host evaluated).
//!
//! PNG, JPEG and BMP at 8 or 16 bits, gray or colour (colour → Rec. 709 luma, 16-bit → scaled to
//! 8-bit); DICOM single- and multi-frame (uncompressed, RLE, deflate, JPEG baseline/lossless), with
//! the file's own VOI windowing (8-bit data without one is kept as stored, deeper data is scaled
//! min–max), one frame per image.

use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

/// One 8-bit grayscale frame, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height` bytes.
    pub pixels: Vec<u8>,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid image of its type.
    #[error("cannot decode {path}: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The extension is not one of the supported image types.
    #[error("{path} is not a supported image (png, jpg, jpeg, bmp, dcm)")]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
}

/// How a file is decoded, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// PNG, JPEG or BMP.
    Raster,
    /// DICOM (`.dcm`, `.dicom`).
    Dicom,
}

/// The kind of `path` by extension (case-insensitive), or `None` for anything else.
pub fn file_kind(path: &Path) -> Option<FileKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "png" | "jpg" | "jpeg" | "bmp" => Some(FileKind::Raster),
        "dcm" | "dicom" => Some(FileKind::Dicom),
        _ => None,
    }
}

/// Converts any decoded image to 8-bit gray.
pub fn to_gray(image: image::DynamicImage) -> GrayFrame {
    let luma = image.into_luma8();
    GrayFrame { width: luma.width(), height: luma.height(), pixels: luma.into_raw() }
}

/// Reads every frame of an image file (one for PNG/JPEG/BMP, one per frame for DICOM).
pub fn read_gray_frames(path: &Path) -> Result<Vec<GrayFrame>, ImageReadError> {
    let decode = |reason: String| ImageReadError::Decode { path: path.to_path_buf(), reason };
    match file_kind(path) {
        Some(FileKind::Raster) => {
            let bytes =
                std::fs::read(path).map_err(|source| ImageReadError::Io { path: path.to_path_buf(), source })?;
            let format = image::ImageFormat::from_path(path).map_err(|e| decode(e.to_string()))?;
            let image = image::load_from_memory_with_format(&bytes, format).map_err(|e| decode(e.to_string()))?;
            let frame = to_gray(image);
            if frame.width == 0 || frame.height == 0 {
                return Err(decode("the image has no pixels".into()));
            }
            Ok(std::vec![frame])
        }
        Some(FileKind::Dicom) => {
            use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption};
            if let Err(source) = std::fs::metadata(path) {
                return Err(ImageReadError::Io { path: path.to_path_buf(), source });
            }
            let object = dicom_object::open_file(path).map_err(|e| decode(e.to_string()))?;
            let pixels = object.decode_pixel_data().map_err(|e| decode(e.to_string()))?;
            let frames = pixels.number_of_frames();
            if frames == 0 {
                return Err(decode("the DICOM file has no image frames".into()));
            }
            // The file's own VOI window/LUT when it has one; otherwise 8-bit data is shown as
            // stored and deeper data is scaled min–max into 8 bits.
            let has_window = pixels.window().ok().flatten().is_some_and(|w| !w.is_empty())
                || pixels.voi_lut_sequence().ok().flatten().is_some_and(|l| !l.is_empty());
            let voi = match (has_window, pixels.bits_stored() <= 8) {
                (true, _) => VoiLutOption::Default,
                (false, true) => VoiLutOption::Identity,
                (false, false) => VoiLutOption::Normalize,
            };
            let options = ConvertOptions::new().with_voi_lut(voi).force_8bit();
            (0..frames)
                .map(|f| {
                    pixels
                        .to_dynamic_image_with_options(f, &options)
                        .map(to_gray)
                        .map_err(|e| decode(std::format!("frame {f}: {e}")))
                })
                .collect()
        }
        None => Err(ImageReadError::Unsupported { path: path.to_path_buf() }),
    }
}

/// Writes 8-bit grayscale frames (all `width × height`) as one uncompressed ultrasound DICOM file
/// (multi-frame when more than one): test fixtures, and frames exported from a probe recording.
pub fn write_gray_dicom(path: &Path, width: u16, height: u16, frames: &[&[u8]]) -> Result<(), ImageReadError> {
    use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
    use dicom_dictionary_std::uids;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let fail = |reason: String| ImageReadError::Decode { path: path.to_path_buf(), reason };
    let frame_len = width as usize * height as usize;
    if frames.is_empty() || frames.iter().any(|f| f.len() != frame_len) {
        return Err(fail(std::format!("every frame must hold {width}×{height} bytes")));
    }
    let sop =
        if frames.len() > 1 { uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE } else { uids::ULTRASOUND_IMAGE_STORAGE };
    let instance = "2.25.1";
    let el = |group, element, vr, value: PrimitiveValue| DataElement::new(Tag(group, element), vr, value);
    let object = InMemDicomObject::from_element_iter([
        el(0x0008, 0x0016, VR::UI, PrimitiveValue::from(sop)),
        el(0x0008, 0x0018, VR::UI, PrimitiveValue::from(instance)),
        el(0x0008, 0x0060, VR::CS, PrimitiveValue::from("US")),
        el(0x0028, 0x0002, VR::US, PrimitiveValue::from(1u16)),
        el(0x0028, 0x0004, VR::CS, PrimitiveValue::from("MONOCHROME2")),
        el(0x0028, 0x0008, VR::IS, PrimitiveValue::from(frames.len().to_string())),
        el(0x0028, 0x0010, VR::US, PrimitiveValue::from(height)),
        el(0x0028, 0x0011, VR::US, PrimitiveValue::from(width)),
        el(0x0028, 0x0100, VR::US, PrimitiveValue::from(8u16)),
        el(0x0028, 0x0101, VR::US, PrimitiveValue::from(8u16)),
        el(0x0028, 0x0102, VR::US, PrimitiveValue::from(7u16)),
        el(0x0028, 0x0103, VR::US, PrimitiveValue::from(0u16)),
        el(0x7FE0, 0x0010, VR::OB, PrimitiveValue::from(frames.concat())),
    ]);
    let file = object
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop)
                .media_storage_sop_instance_uid(instance),
        )
        .map_err(|e| fail(e.to_string()))?;
    file.write_to_file(path).map_err(|e| fail(e.to_string()))
}
