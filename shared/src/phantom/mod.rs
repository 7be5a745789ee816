//! Procedural ocular B-scan phantom: labelled images for the five CDNet classes.
//!
//! No public ocular ultrasound data set can be shipped, so the project makes its own. Each image
//! has the anatomy a B-scan shows (see `../shared/data/erdes-sample`): a dark globe (vitreous) with
//! a bright posterior wall, lens echoes at the top, speckled orbital fat with an optic-nerve shadow
//! behind the globe, and a linear or sector field of view. On top come depth attenuation with
//! imperfect time-gain compensation, laterally correlated Rayleigh speckle, log compression,
//! random gain and contrast, a small rotation and translation, and scanner text outside the crop
//! area. The lesion defines the class:
//!
//! * **Normal**: a clean globe. At higher difficulty, faint reverberation arcs appear in the
//!   anterior vitreous in every class, so "any echo in the vitreous" is not a shortcut.
//! * **IOT**: a dome- or mushroom-shaped echogenic mass on the wall, with shadowing behind it.
//! * **RD**: a thin, bright, undulating membrane attached to the wall. It is a V/funnel towards
//!   the optic disc, or a partial tent.
//! * **PSS**: a posterior outward pouch of the wall, in an axially elongated globe.
//! * **VH**: diffuse or clumped low-to-medium echoes inside the vitreous, more of them inferiorly.
//!
//! Every image is a pure function of `(class, seed, config)`. Rendering an image returns its
//! lesion mask and box too, so heatmap localisation can be scored.

mod render;
mod sweep;
mod texture;

pub use render::{PhantomImage, render};
pub use sweep::{SweepConfig, SweepFrame, SweepFrameKind, sweep};

use crate::{CropProfile, Rect};
use serde::{Deserialize, Serialize};
use std::vec;
use std::vec::Vec;

/// The phantom's classes, in the ocular label-set order (Normal, IOT, RD, PSS, VH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PhantomClass {
    /// Clean globe.
    Normal,
    /// Intraocular tumour.
    Iot,
    /// Retinal detachment.
    Rd,
    /// Posterior scleral staphyloma.
    Pss,
    /// Vitreous haemorrhage.
    Vh,
}

impl PhantomClass {
    /// All classes in label order.
    pub const ALL: [PhantomClass; 5] =
        [PhantomClass::Normal, PhantomClass::Iot, PhantomClass::Rd, PhantomClass::Pss, PhantomClass::Vh];

    /// The class's label (folder name), as in `crate::labels::OCULAR_CLASSES`.
    pub fn label(self) -> &'static str {
        crate::labels::OCULAR_CLASSES[self.index()].0
    }

    /// Index in the ocular label set.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How the phantom is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhantomConfig {
    /// Image side in pixels (square images).
    pub size: usize,
    /// 0 = large, high-contrast lesions (smoke tests) … 1 = small, faint, partial lesions and
    /// distractors (a plain classifier should not reach 100 %). See [`Difficulty`].
    pub difficulty: f32,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig { size: 256, difficulty: Difficulty::Medium.value() }
    }
}

/// Named difficulty settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difficulty {
    /// 0.15: large, bright lesions.
    Easy,
    /// 0.5: the default.
    Medium,
    /// 0.85: small, faint, partial lesions, with distractors.
    Hard,
}

impl Difficulty {
    /// Parses `easy`, `medium`, `hard` (any case) or a number in 0…1 into the knob value.
    pub fn parse(text: &str) -> Option<f32> {
        match text.to_ascii_lowercase().as_str() {
            "easy" => Some(Difficulty::Easy.value()),
            "medium" => Some(Difficulty::Medium.value()),
            "hard" => Some(Difficulty::Hard.value()),
            other => other.parse::<f32>().ok().filter(|v| (0.0..=1.0).contains(v)),
        }
    }

    /// The knob value in 0…1.
    pub fn value(self) -> f32 {
        match self {
            Difficulty::Easy => 0.15,
            Difficulty::Medium => 0.5,
            Difficulty::Hard => 0.85,
        }
    }
}

/// Where the phantom puts its image: everything outside this crop is scanner text and marks. Use
/// it as the device crop profile when training on phantom data.
pub const PHANTOM_CROP: CropProfile = CropProfile { left: 0.06, top: 0.075, right: 0.94, bottom: 1.0 };

/// A contact sheet: one row per class (Normal, IOT, RD, PSS, VH), `per_row` images each, with the
/// lesion box outlined in red and the crop area in dim blue. RGB, row-major.
pub fn contact_sheet(per_row: usize, seed: u64, config: &PhantomConfig) -> (Vec<u8>, u32, u32) {
    let n = config.size;
    let gap = 4;
    let (w, h) = (per_row * (n + gap) + gap, PhantomClass::ALL.len() * (n + gap) + gap);
    let mut rgb = vec![40u8; w * h * 3];
    let crop = PHANTOM_CROP.pixel_rect(n, n).expect("the phantom crop is valid");
    for (row, class) in PhantomClass::ALL.iter().enumerate() {
        for col in 0..per_row {
            let image = render(*class, image_seed(seed, 0, *class, col), config);
            let (ox, oy) = (gap + col * (n + gap), gap + row * (n + gap));
            for y in 0..n {
                for x in 0..n {
                    let v = image.pixels[y * n + x];
                    let o = ((oy + y) * w + ox + x) * 3;
                    rgb[o..o + 3].copy_from_slice(&[v, v, v]);
                }
            }
            let mut outline = |r: Rect, colour: [u8; 3]| {
                for x in r.x0..r.x1 {
                    for y in [r.y0, r.y1 - 1] {
                        let o = ((oy + y) * w + ox + x) * 3;
                        rgb[o..o + 3].copy_from_slice(&colour);
                    }
                }
                for y in r.y0..r.y1 {
                    for x in [r.x0, r.x1 - 1] {
                        let o = ((oy + y) * w + ox + x) * 3;
                        rgb[o..o + 3].copy_from_slice(&colour);
                    }
                }
            };
            outline(crop, [60, 90, 160]);
            if let Some(b) = image.lesion_box {
                outline(b, [230, 40, 40]);
            }
        }
    }
    (rgb, w as u32, h as u32)
}

/// SplitMix64 finaliser: decorrelates nearby inputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of image `index` of `class` in split number `split` (0 train, 1 val, 2 test) of a set
/// made with `seed`: every image is independent of generation order and thread count.
pub fn image_seed(seed: u64, split: u64, class: PhantomClass, index: usize) -> u64 {
    mix(mix(mix(seed) ^ split) ^ (((class.index() as u64) << 32) | index as u64))
}
