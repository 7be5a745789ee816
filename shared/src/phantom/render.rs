//! Renders one phantom image: scene sampling, tissue echogenicity, lesion, speckle, display chain.

use super::texture::{rayleigh_speckle, scanner_marks, splat, value_noise};
use super::{PHANTOM_CROP, PhantomClass, PhantomConfig};
use crate::Rect;
use crate::resize::resize_bilinear;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{FRAC_PI_2, PI};
use std::vec;
use std::vec::Vec;

/// One rendered image with its ground truth.
#[derive(Debug, Clone)]
pub struct PhantomImage {
    /// Image side in pixels.
    pub size: usize,
    /// The class drawn.
    pub class: PhantomClass,
    /// 8-bit grayscale pixels, row-major, `size²`.
    pub pixels: Vec<u8>,
    /// Lesion mask (255 = lesion), row-major, `size²`; all zero for Normal.
    pub lesion_mask: Vec<u8>,
    /// Bounding box of the lesion mask, if any.
    pub lesion_box: Option<Rect>,
    /// Bounding box of the globe (including a staphyloma's pouch).
    pub globe_box: Rect,
}

/// Linear interpolation from `easy` (difficulty 0) to `hard` (difficulty 1).
fn by_difficulty(easy: f32, hard: f32, d: f32) -> f32 {
    easy + (hard - easy) * d
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Smallest signed difference between two angles.
fn angle_diff(a: f32, b: f32) -> f32 {
    let mut d = (a - b) % (2.0 * PI);
    if d > PI {
        d -= 2.0 * PI;
    } else if d < -PI {
        d += 2.0 * PI;
    }
    d
}

fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A posterior staphyloma: the wall pushed outward around `angle`.
#[derive(Debug, Clone, Copy)]
struct Pouch {
    angle: f32,
    width: f32,
    bulge: f32,
}

/// The globe: an ellipse (radii `rx`, `ry`) rotated by the probe angle. `φ = +π/2` is posterior
/// (down the image, away from the probe).
#[derive(Debug, Clone, Copy)]
struct Globe {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    cos: f32,
    sin: f32,
    /// Wall thickness as a fraction of the radius.
    wall: f32,
    pouch: Option<Pouch>,
}

/// Where a pixel lies relative to the globe.
#[derive(Debug, Clone, Copy)]
struct Polar {
    /// Angle on the normalised ellipse; π/2 is posterior.
    phi: f32,
    /// Normalised radius against the nominal ellipse (1 = outer wall).
    rho: f32,
    /// Normalised radius against the wall including a pouch.
    rho_eff: f32,
    /// Pouch strength at this angle (0 without a pouch).
    pouch: f32,
}

impl Globe {
    fn polar(&self, x: f32, y: f32) -> Polar {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = (dx * self.cos + dy * self.sin) / self.rx;
        let v = (-dx * self.sin + dy * self.cos) / self.ry;
        let rho = (u * u + v * v).sqrt();
        let phi = v.atan2(u);
        let pouch = self.pouch.map_or(0.0, |p| p.bulge * (-(angle_diff(phi, p.angle) / p.width).powi(2)).exp());
        Polar { phi, rho, rho_eff: rho / (1.0 + pouch), pouch }
    }

    /// Image coordinates of the point at normalised radius `rho`, angle `phi`.
    fn point(&self, rho: f32, phi: f32) -> (f32, f32) {
        let (u, v) = (rho * phi.cos() * self.rx, rho * phi.sin() * self.ry);
        (self.cx + u * self.cos - v * self.sin, self.cy + u * self.sin + v * self.cos)
    }

    fn mean_radius(&self) -> f32 {
        0.5 * (self.rx + self.ry)
    }
}

/// The probe's field of view.
#[derive(Debug, Clone, Copy)]
enum FieldOfView {
    /// Linear array: a rectangle.
    Linear { x0: f32, x1: f32, y0: f32 },
    /// Sector/fan from an apex.
    Sector { apex_x: f32, apex_y: f32, half_angle: f32, radius: f32 },
}

impl FieldOfView {
    /// Inside weight (soft 1-pixel edge) and depth from the transducer, in pixels.
    fn sample(&self, x: f32, y: f32) -> (f32, f32) {
        match *self {
            FieldOfView::Linear { x0, x1, y0 } => {
                let w = smoothstep(x0 - 0.5, x0 + 0.5, x)
                    * (1.0 - smoothstep(x1 - 0.5, x1 + 0.5, x))
                    * smoothstep(y0 - 0.5, y0 + 0.5, y);
                (w, (y - y0).max(0.0))
            }
            FieldOfView::Sector { apex_x, apex_y, half_angle, radius } => {
                let (dx, dy) = (x - apex_x, y - apex_y);
                let r = (dx * dx + dy * dy).sqrt();
                let angle = dx.atan2(dy.max(1e-3)).abs();
                let edge = (half_angle - angle) * r; // distance to the side, roughly
                let w = smoothstep(-0.5, 0.5, edge)
                    * (1.0 - smoothstep(radius - 0.5, radius + 0.5, r))
                    * (dy > 0.0) as u8 as f32;
                (w, r)
            }
        }
    }
}

/// The lesion of the image, in a form that can be evaluated per pixel or drawn.
#[derive(Debug, Clone)]
enum Lesion {
    None,
    Mass { angle: f32, half_width: f32, height: f32, mushroom: bool, intensity: f32 },
    Membrane { curves: Vec<Vec<(f32, f32)>>, sigma: f32, intensity: f32 },
    Staphyloma,
    Haemorrhage { field: Vec<f32>, intensity: f32 },
}

/// Everything random about one image.
struct Scene {
    size: usize,
    globe: Globe,
    fov: FieldOfView,
    optic_nerve: f32,
    lens: bool,
    /// Faint arcs in the anterior vitreous (artefact, every class).
    reverberation: Vec<Vec<(f32, f32)>>,
    lesion: Lesion,
    attenuation: f32,
    tgc: f32,
    speckle: f32,
    gain: f32,
    contrast: f32,
}

/// Renders one phantom image of `class` from `seed`.
pub fn render(class: PhantomClass, seed: u64, config: &PhantomConfig) -> PhantomImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scene = Scene::sample(class, config, &mut rng);
    scene.draw(class, &mut rng)
}

impl Scene {
    fn sample(class: PhantomClass, config: &PhantomConfig, rng: &mut ChaCha8Rng) -> Scene {
        let s = config.size as f32;
        let d = config.difficulty.clamp(0.0, 1.0);
        let angle = uniform(rng, -8.0, 8.0).to_radians();
        let rx = s * uniform(rng, 0.25, 0.3);
        let mut ry = rx * uniform(rng, 0.97, 1.06);
        let pouch = (class == PhantomClass::Pss).then(|| {
            ry *= 1.0 + by_difficulty(0.12, 0.04, d) * uniform(rng, 0.6, 1.4);
            Pouch {
                angle: FRAC_PI_2 + uniform(rng, -0.3, 0.3),
                width: uniform(rng, 0.22, 0.4),
                bulge: by_difficulty(0.3, 0.09, d) * uniform(rng, 0.8, 1.2),
            }
        });
        let globe = Globe {
            cx: s * (0.5 + uniform(rng, -0.04, 0.04)),
            cy: s * (0.55 + uniform(rng, -0.04, 0.03)),
            rx,
            ry,
            cos: angle.cos(),
            sin: angle.sin(),
            wall: uniform(rng, 0.1, 0.14),
            pouch,
        };
        let top = PHANTOM_CROP.top * s + 2.0;
        let fov = if rng.random::<bool>() {
            FieldOfView::Linear {
                x0: s * (PHANTOM_CROP.left + uniform(rng, 0.02, 0.05)),
                x1: s * (PHANTOM_CROP.right - uniform(rng, 0.02, 0.05)),
                y0: top,
            }
        } else {
            FieldOfView::Sector {
                apex_x: s * 0.5,
                apex_y: top,
                half_angle: uniform(rng, 0.55, 0.68),
                radius: s * uniform(rng, 0.85, 0.95),
            }
        };
        let optic_nerve = FRAC_PI_2 + uniform(rng, -0.15, 0.35);
        let lens = rng.random::<f32>() < 0.85;
        let mut reverberation = Vec::new();
        if rng.random::<f32>() < 0.7 * d {
            for _ in 0..rng.random_range(1..=2) {
                let rho = uniform(rng, 0.45, 0.7);
                let centre = -FRAC_PI_2 + uniform(rng, -0.3, 0.3);
                let span = uniform(rng, 0.3, 0.7);
                reverberation.push(arc(&globe, rho, centre - span / 2.0, centre + span / 2.0, |_| 0.0));
            }
        }
        let lesion = match class {
            PhantomClass::Normal => Lesion::None,
            PhantomClass::Pss => Lesion::Staphyloma,
            PhantomClass::Iot => Lesion::Mass {
                angle: FRAC_PI_2 + uniform(rng, -1.1, 1.1),
                half_width: rx * by_difficulty(0.38, 0.12, d) * uniform(rng, 0.8, 1.2),
                height: rx * by_difficulty(0.42, 0.12, d) * uniform(rng, 0.7, 1.3),
                mushroom: rng.random::<f32>() < 0.35,
                intensity: by_difficulty(0.5, 0.16, d) * uniform(rng, 0.8, 1.2),
            },
            PhantomClass::Rd => Lesion::Membrane {
                curves: membrane_curves(&globe, optic_nerve, d, rng),
                sigma: by_difficulty(1.3, 0.75, d) * s / 256.0,
                intensity: by_difficulty(0.9, 0.3, d) * uniform(rng, 0.85, 1.15),
            },
            PhantomClass::Vh => {
                let cells = rng.random_range(6..=12);
                // A mild bleed is sparse (few clumps), a dense one fills the vitreous.
                let sparsity = by_difficulty(2.0, 5.0, d);
                let field: Vec<f32> = (0..cells * cells).map(|_| rng.random::<f32>().powf(sparsity)).collect();
                Lesion::Haemorrhage { field, intensity: by_difficulty(0.35, 0.07, d) * uniform(rng, 0.6, 1.4) }
            }
        };
        let attenuation = uniform(rng, 1.6, 2.8);
        Scene {
            size: config.size,
            globe,
            fov,
            optic_nerve,
            lens,
            reverberation,
            lesion,
            attenuation,
            tgc: attenuation * uniform(rng, 0.5, 0.9),
            speckle: uniform(rng, 0.55, 0.8),
            gain: uniform(rng, 0.7, 1.4),
            contrast: uniform(rng, 0.85, 1.2),
        }
    }

    /// Mean tissue echogenicity (before speckle) for everything drawn per pixel, and whether the
    /// pixel belongs to the lesion.
    /// Also returns whether the pixel lies inside the globe (wall included).
    fn tissue(&self, x: f32, y: f32, texture: f32, vh: f32) -> (f32, bool, bool) {
        let g = &self.globe;
        let p = g.polar(x, y);
        let inner = 1.0 - g.wall;
        let mut value;
        let mut lesion = false;
        if p.rho_eff < inner {
            value = 0.006;
        } else if p.rho_eff < 1.0 {
            // Specular wall: bright where the beam meets it head-on (top and bottom).
            let t = (p.rho_eff - inner) / g.wall;
            let bump = (PI * t).sin().max(0.0).sqrt();
            value = 0.03 + (0.05 + 0.9 * p.phi.sin().abs().powi(2)) * bump * (0.85 + 0.3 * texture);
        } else {
            let dist = p.rho_eff - 1.0;
            let posterior = smoothstep(-0.4, 0.2, p.phi.sin());
            // Orbital fat: bright, streaky; lateral and anterior tissue dimmer.
            let fat = 0.4 * (-dist * 1.6).exp() * (0.25 + 1.3 * texture * texture);
            let anterior = 0.1 * (-dist * 1.2).exp() * (0.5 + texture);
            value = posterior * fat + (1.0 - posterior) * anterior + 0.015;
            // The optic nerve: a dark band behind the posterior pole.
            value *= 1.0 - 0.8 * (-(angle_diff(p.phi, self.optic_nerve) / 0.09).powi(2)).exp() * posterior;
        }
        match &self.lesion {
            Lesion::Mass { angle, half_width, height, mushroom, intensity } => {
                let r = g.mean_radius();
                let t = angle_diff(p.phi, *angle) * r;
                let n = (inner - p.rho_eff) * r + 0.5 * g.wall * r; // from the wall's middle, inward
                if n > 0.0 && n < *height {
                    let f = n / height;
                    let width = if *mushroom {
                        // Narrow neck through Bruch's membrane, then a wide rounded cap.
                        if f < 0.35 { 0.5 } else { (1.0 - ((f - 0.65) / 0.35).powi(2)).max(0.0).sqrt() }
                    } else {
                        (1.0 - f * f).sqrt()
                    } * half_width;
                    let inside = smoothstep(0.8, -0.8, t.abs() - width);
                    if inside > 0.0 {
                        value = value * (1.0 - inside) + inside * intensity * (0.7 + 0.6 * texture);
                        lesion |= inside > 0.5;
                    }
                } else if n <= -0.5 * g.wall * r && t.abs() < 0.8 * half_width {
                    value *= 0.55; // acoustic shadow behind the mass
                }
            }
            Lesion::Staphyloma => {
                let bulge = g.pouch.map_or(f32::INFINITY, |pouch| pouch.bulge);
                lesion = p.pouch > 0.35 * bulge && p.rho >= inner && p.rho_eff <= 1.0;
            }
            Lesion::Haemorrhage { intensity, .. } => {
                let inside = smoothstep(inner, inner - 0.06, p.rho_eff);
                let inferior = 0.6 + 0.8 * smoothstep(-1.0, 1.0, p.phi.sin() * p.rho);
                let echo = vh * inside * inferior;
                value += intensity * echo;
                lesion = echo > 0.3 && inside > 0.5;
            }
            Lesion::None | Lesion::Membrane { .. } => {}
        }
        (value, lesion, p.rho_eff <= 1.0)
    }

    fn draw(&self, class: PhantomClass, rng: &mut ChaCha8Rng) -> PhantomImage {
        let n = self.size;
        let s = n as f32;
        // Anisotropic: tissue streaks run across the beam.
        let texture = value_noise(rng, n, (s / 9.0).max(4.0), (s / 28.0).max(2.0));
        let vh_field = match &self.lesion {
            Lesion::Haemorrhage { field, .. } => {
                let cells = (field.len() as f32).sqrt() as usize;
                // Clumps over the globe's bounding square; sharpened so they read as clumps.
                let mut up = vec![0.0; n * n];
                let _ = resize_bilinear(field, cells, cells, Rect::full(cells, cells), &mut up, n, n);
                let max = up.iter().copied().fold(1e-6, f32::max);
                up.iter_mut().for_each(|v| *v = (*v / max).powf(1.5));
                up
            }
            _ => Vec::new(),
        };
        let mut echo = vec![0.0f32; n * n];
        let mut mask = vec![0u8; n * n];
        let mut globe_box = BoxTracker::default();
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                let vh = vh_field.get(i).copied().unwrap_or(0.0);
                let (v, lesion, in_globe) = self.tissue(x as f32 + 0.5, y as f32 + 0.5, texture[i], vh);
                echo[i] = v;
                if lesion {
                    mask[i] = 255;
                }
                if in_globe {
                    globe_box.add(x, y);
                }
            }
        }
        // Thin bright structures are splatted: lens capsules, artefacts, a detached retina.
        let g = &self.globe;
        if self.lens {
            let post = arc(g, 0.62, -FRAC_PI_2 - 0.55, -FRAC_PI_2 + 0.55, |_| 0.0);
            let ant = arc(g, 0.86, -FRAC_PI_2 - 0.45, -FRAC_PI_2 + 0.45, |_| 0.0);
            splat(&mut echo, None, n, &post, 0.9 * s / 256.0, 0.7);
            splat(&mut echo, None, n, &ant, 0.9 * s / 256.0, 0.5);
        }
        for curve in &self.reverberation {
            splat(&mut echo, None, n, curve, 0.8 * s / 256.0, 0.09);
        }
        if let Lesion::Membrane { curves, sigma, intensity } = &self.lesion {
            for curve in curves {
                splat(&mut echo, Some(&mut mask), n, curve, *sigma, *intensity);
            }
        }
        let pixels = self.display(&echo, rng);
        let lesion_box = bounding_box(&mask, n);
        let globe_box = globe_box.rect().unwrap_or(Rect::full(n, n));
        PhantomImage { size: n, class, pixels, lesion_mask: mask, lesion_box, globe_box }
    }

    /// Speckle, attenuation, log compression, gain, field of view, scanner text → 8-bit pixels.
    fn display(&self, echo: &[f32], rng: &mut ChaCha8Rng) -> Vec<u8> {
        let n = self.size;
        let s = n as f32;
        let speckle = rayleigh_speckle(rng, n);
        // Log compression + gain + contrast as a lookup table over echo amplitude.
        const LUT_MAX: f32 = 4.0;
        const LUT_LEN: usize = 8192;
        let compress = 20.0f32;
        let lut: Vec<f32> = (0..LUT_LEN)
            .map(|i| {
                let e = i as f32 / (LUT_LEN - 1) as f32 * LUT_MAX;
                ((1.0 + compress * e * self.gain).ln() / (1.0 + compress).ln()).min(1.0).powf(self.contrast)
            })
            .collect();
        // Attenuation with imperfect time-gain compensation, tabulated per pixel of depth.
        let depth_gain: Vec<f32> = (0..2 * n + 2)
            .map(|d| {
                let z = d as f32 / s;
                (-self.attenuation * z).exp() * (1.0 + self.tgc * z)
            })
            .collect();
        let mut out = vec![0u8; n * n];
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                let (inside, depth) = self.fov.sample(x as f32 + 0.5, y as f32 + 0.5);
                if inside <= 0.0 {
                    continue;
                }
                let gain = depth_gain[(depth as usize).min(depth_gain.len() - 1)];
                let sp = 1.0 + self.speckle * (speckle[i] - 1.0);
                let e = (echo[i] * sp * gain).clamp(0.0, LUT_MAX);
                let v = lut[(e / LUT_MAX * (LUT_LEN - 1) as f32) as usize];
                out[i] = (v * inside * 255.0 + 0.5) as u8;
            }
        }
        scanner_marks(&mut out, n, rng);
        out
    }
}

/// Points along the globe at normalised radius `rho + offset(s)` from angle `a0` to `a1`, about
/// two per pixel.
fn arc(g: &Globe, rho: f32, a0: f32, a1: f32, offset: impl Fn(f32) -> f32) -> Vec<(f32, f32)> {
    let len = (a1 - a0).abs() * rho * g.mean_radius();
    let steps = (len * 2.0).ceil().max(2.0) as usize;
    (0..=steps)
        .map(|k| {
            let s = k as f32 / steps as f32;
            g.point(rho + offset(s), a0 + (a1 - a0) * s)
        })
        .collect()
}

/// A detached retina: a V/funnel towards the optic disc, or a partial tent, undulating.
fn membrane_curves(g: &Globe, optic_nerve: f32, d: f32, rng: &mut ChaCha8Rng) -> Vec<Vec<(f32, f32)>> {
    let inner = 1.0 - g.wall;
    let wave = |rng: &mut ChaCha8Rng| {
        let (amp, k, phase) = (uniform(rng, 0.01, 0.04), uniform(rng, 1.5, 4.0), uniform(rng, 0.0, 2.0 * PI));
        move |s: f32| amp * (2.0 * PI * k * s + phase).sin() * (PI * s).sin()
    };
    let funnel = rng.random::<f32>() < by_difficulty(0.6, 0.25, d);
    if funnel {
        // Attached at the disc and near the ora serrata on one or both sides; deep into the vitreous.
        let sides: &[f32] = if rng.random::<f32>() < 0.7 { &[1.0, -1.0] } else { &[1.0] };
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        sides
            .iter()
            .map(|&side| {
                let side = side * sign;
                let attach = optic_nerve - side * uniform(rng, 1.9, 2.5);
                let depth = uniform(rng, 0.25, 0.55);
                let w = wave(rng);
                arc(g, inner, attach, optic_nerve, move |s| -depth * (PI * s).sin().powf(0.8) + w(s))
            })
            .collect()
    } else {
        let span = by_difficulty(1.4, 0.45, d) * uniform(rng, 0.7, 1.2);
        let centre = FRAC_PI_2 + uniform(rng, -1.2, 1.2);
        let height = by_difficulty(0.28, 0.08, d) * uniform(rng, 0.7, 1.3);
        let w = wave(rng);
        vec![arc(g, inner, centre - span / 2.0, centre + span / 2.0, move |s| -height * (PI * s).sin() + w(s))]
    }
}

/// Grows a bounding box (end exclusive) pixel by pixel.
#[derive(Debug, Clone, Copy)]
struct BoxTracker {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Default for BoxTracker {
    fn default() -> Self {
        BoxTracker { x0: usize::MAX, y0: usize::MAX, x1: 0, y1: 0 }
    }
}

impl BoxTracker {
    fn add(&mut self, x: usize, y: usize) {
        self.x0 = self.x0.min(x);
        self.y0 = self.y0.min(y);
        self.x1 = self.x1.max(x + 1);
        self.y1 = self.y1.max(y + 1);
    }

    fn rect(&self) -> Option<Rect> {
        (self.x0 != usize::MAX).then_some(Rect { x0: self.x0, y0: self.y0, x1: self.x1, y1: self.y1 })
    }
}

/// Bounding box of the non-zero pixels.
fn bounding_box(mask: &[u8], n: usize) -> Option<Rect> {
    let mut tracker = BoxTracker::default();
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
        tracker.add(i % n, i / n);
    }
    tracker.rect()
}
