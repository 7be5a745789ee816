//! Refits tract-linalg's matrix-kernel cost model for Intel AVX-512 f32 on this machine, the way
//! tract's own `cost-model` tool does (which is not published): every f32 kernel the model weighs
//! is timed on a grid of shapes with the output contiguous along `m` (the orientation the tract-core
//! patch gives a product wherever it can), and `time ≈ a·padded_work + b·tiles + c` is fitted per
//! kernel, non-negative, weighted to relative error. Prints the coefficients in the model file's
//! format, and how far each model's pick is from the fastest kernel over the grid (regret).
//! It is how `vendor/tract-linalg/src/x86_64/intel_avx512_linear.rs` was refitted after the
//! contiguous-store change to the zmm kernels (docs/upstream/tract-linalg-x86-mmm-store.md).
//!
//! `cargo bench -p cdnet-shared --features runtime --bench mmm_cost_fit [-- quick]`

use std::time::Instant;
use tract_linalg::MmmDispatch;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MatMatMul};
use tract_nnef::internal::*;

/// The kernels of the Intel AVX-512 model, in its order.
const KERNELS: &[&str] = &[
    "avx512_mmm_f32_128x1",
    "avx512_mmm_f32_16x12",
    "avx512_mmm_f32_16x8",
    "avx512_mmm_f32_32x5",
    "avx512_mmm_f32_32x6",
    "avx512_mmm_f32_48x4",
    "avx512_mmm_f32_64x3",
    "avx512_mmm_f32_80x2",
    "fma_mmm_f32_16x5",
    "fma_mmm_f32_16x6",
    "fma_mmm_f32_24x4",
    "fma_mmm_f32_32x1",
    "fma_mmm_f32_32x3",
    "fma_mmm_f32_40x2",
    "fma_mmm_f32_64x1",
    "fma_mmm_f32_8x8",
];
/// The one-column kernels are only weighed for `n = 1`, which the matrix-vector model answers
/// before this one: they keep the published coefficients, as does the re-stream term.
const ONE_COLUMN: &[(&str, [f32; 3])] = &[
    ("avx512_mmm_f32_128x1", [2.8409091e-11, 0e0, 1.5589166e-4]),
    ("fma_mmm_f32_32x1", [4.8055494e-11, 2.3481328e-9, 0e0]),
    ("fma_mmm_f32_64x1", [4.3888327e-11, 0e0, 0e0]),
];
const RESTREAM: f32 = 1.2408923e-12;

struct Shape {
    m: usize,
    k: usize,
    n: usize,
}

fn shapes(quick: bool) -> Vec<Shape> {
    let ms: &[usize] = &[16, 32, 48, 96, 144, 240, 320, 672, 1152, 1600, 6400];
    let ks: &[usize] = &[16, 27, 40, 96, 144, 320, 672, 1152];
    let ns: &[usize] = &[2, 4, 8, 12, 25, 40, 100, 400, 1600, 6400];
    let mut out = Vec::new();
    for &m in ms {
        for &k in ks {
            for &n in ns {
                let work = m * k * n;
                if work <= 40_000_000 && m * n <= 2_000_000 && (!quick || (m + k + n) % 3 == 0) {
                    out.push(Shape { m, k, n });
                }
            }
        }
    }
    out
}

/// Best of five timings of one product, each long enough to read (seconds per product).
fn time_product(ker: &dyn MatMatMul, s: &Shape) -> TractResult<f64> {
    let (pack_a, pack_b) = &ker.packings()[0];
    let a = Tensor::from_shape(&[s.m, s.k], &vec![0.25f32; s.m * s.k])?;
    let b = Tensor::from_shape(&[s.k, s.n], &vec![0.5f32; s.k * s.n])?;
    let pa = pack_a.prepare_one(&a, 1, 0)?;
    let pb = pack_b.prepare_one(&b, 0, 1)?;
    // [n, m]: the output is contiguous along m
    let mut c = Tensor::zero::<f32>(&[s.n, s.m])?;
    let reps = (2_000_000 / (s.m * s.k * s.n)).clamp(1, 2000);
    let mut best = f64::MAX;
    unsafe {
        let spec = ker.c_from_data_and_strides(4, 1, s.m as isize);
        let mut scratch = ker.allocate_scratch_space();
        for round in 0..6 {
            let view = c.view_mut();
            let ops = [
                FusedSpec::AddMatMul { a: AsInputValue::Borrowed(&*pa), b: AsInputValue::Borrowed(&*pb), packing: 0 },
                FusedSpec::Store(spec.wrap(&view)),
            ];
            let start = Instant::now();
            for _ in 0..reps {
                ker.run_with_scratch_space(s.m, s.n, &mut *scratch, &ops)?;
            }
            if round > 0 {
                best = best.min(start.elapsed().as_secs_f64() / reps as f64);
            }
        }
    }
    Ok(best)
}

fn features(s: &Shape, mr: usize, nr: usize) -> [f64; 3] {
    let (mp, np) = (s.m.div_ceil(mr), s.n.div_ceil(nr));
    [(mp * mr * np * nr * s.k) as f64, (mp * np) as f64, 1.0]
}

/// Weighted least squares on the features `used` (others 0), by normal equations.
fn solve(rows: &[([f64; 3], f64)], used: &[usize]) -> Option<[f64; 3]> {
    let d = used.len();
    let mut ata = vec![vec![0.0; d]; d];
    let mut atb = vec![0.0; d];
    for (x, t) in rows {
        let w = 1.0 / t; // relative error
        for i in 0..d {
            atb[i] += x[used[i]] * w * t * w;
            for j in 0..d {
                ata[i][j] += x[used[i]] * w * x[used[j]] * w;
            }
        }
    }
    // Gaussian elimination with partial pivoting
    for col in 0..d {
        let pivot = (col..d).max_by(|&a, &b| ata[a][col].abs().total_cmp(&ata[b][col].abs()))?;
        ata.swap(col, pivot);
        atb.swap(col, pivot);
        if ata[col][col].abs() < 1e-300 {
            return None;
        }
        let (pivot_row, pivot_b) = (ata[col].clone(), atb[col]);
        for (row, b) in ata.iter_mut().zip(atb.iter_mut()).enumerate().filter(|(i, _)| *i != col).map(|(_, r)| r) {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            *b -= f * pivot_b;
        }
    }
    let mut coeffs = [0.0; 3];
    for i in 0..d {
        coeffs[used[i]] = atb[i] / ata[i][i];
    }
    Some(coeffs)
}

/// The non-negative fit with the smallest relative residual, over every subset of features.
fn fit(rows: &[([f64; 3], f64)]) -> [f64; 3] {
    let subsets: [&[usize]; 7] = [&[0, 1, 2], &[0, 1], &[0, 2], &[1, 2], &[0], &[1], &[2]];
    let residual = |c: &[f64; 3]| -> f64 {
        rows.iter().map(|(x, t)| ((x[0] * c[0] + x[1] * c[1] + x[2] * c[2]) / t - 1.0).powi(2)).sum()
    };
    subsets
        .iter()
        .filter_map(|used| solve(rows, used))
        .filter(|c| c.iter().all(|v| *v >= 0.0))
        .min_by(|a, b| residual(a).total_cmp(&residual(b)))
        .unwrap_or([0.0; 3])
}

fn main() -> TractResult<()> {
    if !cfg!(target_arch = "x86_64") || !std::is_x86_feature_detected!("avx512f") {
        println!("SKIPPED: mmm_cost_fit refits the Intel AVX-512 model and this CPU has no AVX-512");
        return Ok(());
    }
    let quick = std::env::args().any(|a| a == "quick");
    let dispatch = MmmDispatch::native();
    let kernels: Vec<&dyn MatMatMul> = KERNELS
        .iter()
        .filter_map(|name| dispatch.runnable().iter().find(|k| k.name() == *name))
        .map(|k| &**k)
        .collect();
    let grid = shapes(quick);
    eprintln!("{} kernels × {} shapes", kernels.len(), grid.len());
    // times[shape][kernel]
    let mut times = vec![vec![f64::NAN; kernels.len()]; grid.len()];
    for (si, s) in grid.iter().enumerate() {
        for (ki, ker) in kernels.iter().enumerate() {
            if ker.nr() > 1 || s.n == 1 {
                times[si][ki] = time_product(*ker, s)?;
            }
        }
    }
    let mut coeffs = Vec::new();
    for (ki, ker) in kernels.iter().enumerate() {
        if let Some((_, published)) = ONE_COLUMN.iter().find(|(name, _)| *name == ker.name()) {
            coeffs.push(published.map(|v| v as f64));
            continue;
        }
        let rows: Vec<([f64; 3], f64)> = grid
            .iter()
            .zip(&times)
            .filter(|(_, t)| t[ki].is_finite())
            .map(|(s, t)| (features(s, ker.mr(), ker.nr()), t[ki]))
            .collect();
        coeffs.push(if rows.is_empty() { [0.0; 3] } else { fit(&rows) });
    }
    report_regret(&grid, &times, &kernels, &coeffs, dispatch)?;
    println!("        coeffs: &[");
    for c in &coeffs {
        println!("            [{:e}, {:e}, {:e}],", c[0] as f32, c[1] as f32, c[2] as f32);
    }
    println!("        ],\n        restream: {RESTREAM:e},");
    Ok(())
}

/// Mean time of each model's pick over the grid relative to the fastest kernel measured.
fn report_regret(
    grid: &[Shape],
    times: &[Vec<f64>],
    kernels: &[&dyn MatMatMul],
    coeffs: &[[f64; 3]],
    dispatch: &MmmDispatch,
) -> TractResult<()> {
    let coeffs: Vec<[f32; 3]> = coeffs.iter().map(|c| c.map(|v| v as f32)).collect();
    let refit = tract_linalg::mmm::cost_model::LinearCostModel {
        default_kernel: "avx512_mmm_f32_64x3",
        kernels: KERNELS,
        coeffs: &coeffs,
        restream: RESTREAM,
    };
    let (mut refit_regret, mut current, mut count) = (0.0, 0.0, 0usize);
    for (s, t) in grid.iter().zip(times) {
        let best = t.iter().copied().filter(|v| v.is_finite()).fold(f64::MAX, f64::min);
        let query = tract_linalg::mmm::Query::plain(f32::datum_type(), Some(s.m), Some(s.k), Some(s.n));
        let suitable = dispatch.suitable(&query);
        // the refit, weighed by tract's own model code over the kernels timed here
        let timed: Vec<_> = suitable
            .iter()
            .filter(|c| kernels.iter().position(|k| k.name() == c.0.name()).is_some_and(|ki| t[ki].is_finite()))
            .cloned()
            .collect();
        let Some(refit_name) = refit.preferred(&timed, Some(s.m), Some(s.k), Some(s.n)) else { continue };
        let Some(refit_ki) = kernels.iter().position(|k| k.name() == refit_name) else { continue };
        let picked = dispatch.preferred(&query, &suitable).map(|p| p.0.name().to_string());
        let Some(current_ki) = picked.and_then(|name| kernels.iter().position(|k| k.name() == name)) else {
            continue;
        };
        refit_regret += t[refit_ki] / best;
        current += t[current_ki] / best;
        count += 1;
    }
    println!(
        "// regret over {count} shapes, output contiguous along m: current picker {:.4}x -> refit {:.4}x",
        current / count as f64,
        refit_regret / count as f64
    );
    Ok(())
}
