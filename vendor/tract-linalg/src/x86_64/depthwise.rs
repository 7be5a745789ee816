/// Depthwise convolution along an axis the output is contiguous on: `len` output points, each
/// the bias plus every `taps[t] * input[offsets[t] + i * in_stride]`.
///
/// Same contract as the aarch64 and wasm kernels. The arithmetic is the scalar walk's, in the
/// same order: the bias, then one multiply and one add per tap. It uses no FMA, so every output
/// is bit-identical to the scalar path and a plan gives the same results with or without this
/// kernel. `in_stride == 1` is vectorised at any tap count; any other stride stays scalar.
///
/// # Safety
/// `input.offset(offsets[t] + i * in_stride)` must be readable for every tap and every `i` below
/// `len`, and `len` output points writable from `output`. The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
pub unsafe fn depthwise_w_f32(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        match in_stride {
            1 => contiguous(input, output, taps, offsets, bias, len),
            _ => scalar(input, output, taps, offsets, bias, 0, len, in_stride),
        }
    }
}

/// The `in_stride == 1` case, with the tap count taken at runtime.
///
/// Taps are the outer loop and 32 output points the inner one: four 8-lane accumulators give
/// the adder independent chains, and each tap's broadcast is paid once per 32 points. Real 3x3,
/// 7x7 or 9x9 kernels reach here with 9, 49 or 81 taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn contiguous(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let biasv = _mm256_set1_ps(bias);
        let mut i = 0usize;
        while i + 32 <= len {
            let mut a0 = biasv;
            let mut a1 = biasv;
            let mut a2 = biasv;
            let mut a3 = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let k = _mm256_set1_ps(*tap);
                let p = input.offset(*offset).add(i);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(p), k));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), k));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(p.add(16)), k));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(p.add(24)), k));
            }
            _mm256_storeu_ps(output.add(i), a0);
            _mm256_storeu_ps(output.add(i + 8), a1);
            _mm256_storeu_ps(output.add(i + 16), a2);
            _mm256_storeu_ps(output.add(i + 24), a3);
            i += 32;
        }
        while i + 8 <= len {
            let mut acc = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let x = _mm256_loadu_ps(input.offset(*offset).add(i));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(*tap)));
            }
            _mm256_storeu_ps(output.add(i), acc);
            i += 8;
        }
        scalar(input, output, taps, offsets, bias, i, len, 1);
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn scalar(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    from: usize,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        for i in from..len {
            let mut sum = bias;
            for (tap, offset) in taps.iter().zip(offsets) {
                sum += tap * *input.offset(*offset + i as isize * in_stride);
            }
            *output.add(i) = sum;
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_w_f32(
    *const f32, *mut f32, &[f32], &[isize], f32, usize, isize
));

submit_routine!(x86_64; DepthwiseWF32, DepthwiseW, "x86_64_avx_depthwise_w_f32", depthwise_w_f32,
    isa(X86_64Avx));

/// Depthwise convolution with the channel as the contiguous dim, the contract of
/// [`crate::routines::DepthwiseCF32`] (the same as the aarch64 and wasm kernels): `len` output
/// positions of `channels` channels each; point `i`, channel `c`, is `bias[c]` plus every
/// `kernel[tap_indices[t] * k_stride + c] * input[i * in_stride + offsets[t] + c]`, taps in order.
///
/// Each product is fused into the running sum (FMA), as the aarch64 kernel does; the channel
/// tail that no vector covers uses the same fused operation, so every channel of every point
/// gets the same bits whichever lane computes it. Two output points are computed together so
/// each kernel vector, loaded once, feeds two FMAs: with taps outer and channels inner the loop
/// is bound by loads, not by arithmetic.
///
/// # Safety
/// As [`crate::routines::DepthwiseCF32`], on a machine with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    unsafe {
        let taps = ChannelTaps { kernel, tap_indices, offsets, k_stride };
        let mut i = 0usize;
        while i + 2 <= len {
            let inputs = [input.offset(i as isize * in_stride), input.offset((i + 1) as isize * in_stride)];
            let outputs = [output.offset(i as isize * out_stride), output.offset((i + 1) as isize * out_stride)];
            channel_run::<2>(&taps, inputs, outputs, bias, channels);
            i += 2;
        }
        if i < len {
            let inputs = [input.offset(i as isize * in_stride)];
            let outputs = [output.offset(i as isize * out_stride)];
            channel_run::<1>(&taps, inputs, outputs, bias, channels);
        }
    }
}

/// The kernel side of [`depthwise_c_f32`]: where tap `t` of channel `c` is, and where its input is
/// relative to an output point's centre.
#[cfg(target_arch = "x86_64")]
struct ChannelTaps<'a> {
    kernel: *const f32,
    tap_indices: &'a [usize],
    offsets: &'a [isize],
    k_stride: usize,
}

/// Every channel of `P` output points: 32 channels at a time (four vectors per point), then 8,
/// then one.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channel_run<const P: usize>(
    taps: &ChannelTaps,
    inputs: [*const f32; P],
    outputs: [*mut f32; P],
    bias: *const f32,
    channels: usize,
) {
    unsafe {
        let mut c = 0usize;
        while c + 32 <= channels {
            channel_block::<P, 4>(taps, inputs, outputs, bias, c);
            c += 32;
        }
        while c + 8 <= channels {
            channel_block::<P, 1>(taps, inputs, outputs, bias, c);
            c += 8;
        }
        while c < channels {
            for p in 0..P {
                let mut sum = *bias.add(c);
                for (&kix, &off) in taps.tap_indices.iter().zip(taps.offsets) {
                    let k = *taps.kernel.add(kix * taps.k_stride + c);
                    sum = k.mul_add(*inputs[p].offset(off).add(c), sum);
                }
                *outputs[p].add(c) = sum;
            }
            c += 1;
        }
    }
}

/// `V` vectors of 8 channels from `c` on, for `P` output points: `V × P` accumulators, the kernel
/// vectors loaded once per tap for all points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channel_block<const P: usize, const V: usize>(
    taps: &ChannelTaps,
    inputs: [*const f32; P],
    outputs: [*mut f32; P],
    bias: *const f32,
    c: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); V]; P];
        for v in 0..V {
            let b = _mm256_loadu_ps(bias.add(c + 8 * v));
            for p in 0..P {
                acc[p][v] = b;
            }
        }
        for (&kix, &off) in taps.tap_indices.iter().zip(taps.offsets) {
            let k = taps.kernel.add(kix * taps.k_stride + c);
            for v in 0..V {
                let kv = _mm256_loadu_ps(k.add(8 * v));
                for p in 0..P {
                    let x = _mm256_loadu_ps(inputs[p].offset(off).add(c + 8 * v));
                    acc[p][v] = _mm256_fmadd_ps(x, kv, acc[p][v]);
                }
            }
        }
        for p in 0..P {
            for v in 0..V {
                _mm256_storeu_ps(outputs[p].add(c + 8 * v), acc[p][v]);
            }
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_c_f32(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize
));

submit_routine!(x86_64; DepthwiseCF32, DepthwiseC, "x86_64_fma_depthwise_c_f32", depthwise_c_f32,
    isa(X86_64Avx2, X86_64Fma));

/// [`depthwise_c_f32`] with AVX-512 vectors: the same contract, the same fused operations in the
/// same order (so the same bits), 16 channels a vector and four output points sharing each kernel
/// vector, where the AVX2 kernel has 8 and two. The channel tail is one masked vector, not a
/// scalar loop: a masked FMA lane is the scalar `mul_add`.
///
/// # Safety
/// As [`crate::routines::DepthwiseCF32`], on a machine with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32_avx512(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    unsafe {
        let taps = ChannelTaps { kernel, tap_indices, offsets, k_stride };
        let point = |i: usize| {
            (input.offset(i as isize * in_stride), output.offset(i as isize * out_stride))
        };
        let mut i = 0usize;
        while i + 4 <= len {
            let points = [point(i), point(i + 1), point(i + 2), point(i + 3)];
            channel_run_zmm::<4>(&taps, points.map(|p| p.0), points.map(|p| p.1), bias, channels);
            i += 4;
        }
        if i + 2 <= len {
            let points = [point(i), point(i + 1)];
            channel_run_zmm::<2>(&taps, points.map(|p| p.0), points.map(|p| p.1), bias, channels);
            i += 2;
        }
        if i < len {
            let (input, output) = point(i);
            channel_run_zmm::<1>(&taps, [input], [output], bias, channels);
        }
    }
}

/// Every channel of `P` output points: 64 channels at a time (four vectors per point), then 16,
/// then the rest under a mask.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channel_run_zmm<const P: usize>(
    taps: &ChannelTaps,
    inputs: [*const f32; P],
    outputs: [*mut f32; P],
    bias: *const f32,
    channels: usize,
) {
    unsafe {
        let mut c = 0usize;
        while c + 64 <= channels {
            channel_block_zmm::<P, 4>(taps, inputs, outputs, bias, c, 0xffff);
            c += 64;
        }
        while c + 16 <= channels {
            channel_block_zmm::<P, 1>(taps, inputs, outputs, bias, c, 0xffff);
            c += 16;
        }
        if c < channels {
            channel_block_zmm::<P, 1>(taps, inputs, outputs, bias, c, (1u16 << (channels - c)) - 1);
        }
    }
}

/// `V` vectors of 16 channels from `c` on, for `P` output points, only the channels of `mask` in
/// each vector (all of them but in the tail): `V × P` accumulators, the kernel vectors loaded
/// once per tap for all points. Masked-off lanes are neither read nor written.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channel_block_zmm<const P: usize, const V: usize>(
    taps: &ChannelTaps,
    inputs: [*const f32; P],
    outputs: [*mut f32; P],
    bias: *const f32,
    c: usize,
    mask: u16,
) {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; P];
        for v in 0..V {
            let b = _mm512_maskz_loadu_ps(mask, bias.add(c + 16 * v));
            for p in 0..P {
                acc[p][v] = b;
            }
        }
        for (&kix, &off) in taps.tap_indices.iter().zip(taps.offsets) {
            let k = taps.kernel.add(kix * taps.k_stride + c);
            for v in 0..V {
                let kv = _mm512_maskz_loadu_ps(mask, k.add(16 * v));
                for p in 0..P {
                    let x = _mm512_maskz_loadu_ps(mask, inputs[p].offset(off).add(c + 16 * v));
                    acc[p][v] = _mm512_fmadd_ps(x, kv, acc[p][v]);
                }
            }
        }
        for p in 0..P {
            for v in 0..V {
                _mm512_mask_storeu_ps(outputs[p].add(c + 16 * v), mask, acc[p][v]);
            }
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_c_f32_avx512(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize
));

submit_routine!(x86_64; DepthwiseCF32, DepthwiseC, "x86_64_avx512_depthwise_c_f32",
    depthwise_c_f32_avx512, isa(X86_64Avx512f));

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn reference(
        input: &[f32],
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
        in_stride: isize,
        center: usize,
    ) -> Vec<f32> {
        (0..len)
            .map(|i| {
                taps.iter().zip(offsets).fold(bias, |sum, (tap, offset)| {
                    sum + tap * input[(center as isize + offset + i as isize * in_stride) as usize]
                })
            })
            .collect()
    }

    fn compare(taps: usize, len: usize, in_stride: isize) {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        let k: Vec<f32> = (0..taps).map(|t| (t as f32 * 0.7).sin()).collect();
        let offsets: Vec<isize> = (0..taps as isize).map(|t| t - taps as isize / 2).collect();
        let center = taps;
        let input: Vec<f32> = (0..center * 2 + len * in_stride as usize + 1)
            .map(|i| (i as f32 * 0.37).cos())
            .collect();
        let expected = reference(&input, &k, &offsets, 0.25, len, in_stride, center);
        let mut output = vec![0f32; len];
        unsafe {
            depthwise_w_f32(
                input.as_ptr().add(center),
                output.as_mut_ptr(),
                &k,
                &offsets,
                0.25,
                len,
                in_stride,
            )
        };
        // Same operations in the same order: the results must match bit for bit.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&output), bits(&expected), "taps {taps} len {len} stride {in_stride}");
    }

    /// Channel-last: every channel of every point against a scalar walk with the same fused
    /// operations in the same order, so the comparison is bit for bit. The kernel runs on a block
    /// of channels inside a wider tensor (`k_stride` and the strides span all of them), and must
    /// leave the channels outside its block untouched.
    fn compare_c(
        run: crate::routines::DepthwiseCF32,
        taps: usize,
        channels: usize,
        block: std::ops::Range<usize>,
        len: usize,
        s: isize,
    ) {
        let kernel: Vec<f32> = (0..taps * channels).map(|i| (i as f32 * 0.7).sin()).collect();
        let tap_indices: Vec<usize> = (0..taps).rev().collect();
        let offsets: Vec<isize> =
            (0..taps as isize).map(|t| (t - taps as isize / 2) * channels as isize).collect();
        let bias: Vec<f32> = (0..channels).map(|i| i as f32 * 0.05 - 0.1).collect();
        let in_stride = channels as isize * s;
        let out_stride = channels as isize;
        let center = (taps / 2) * channels;
        let input: Vec<f32> = (0..center + len.saturating_sub(1) * in_stride as usize + taps * channels)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let out_len = len * out_stride as usize;
        let mut want = vec![f32::NAN; out_len];
        for i in 0..len {
            for c in block.clone() {
                let mut sum = bias[c];
                for (t, &kix) in tap_indices.iter().enumerate() {
                    let x = input[(center as isize + i as isize * in_stride + offsets[t]) as usize + c];
                    sum = kernel[kix * channels + c].mul_add(x, sum);
                }
                want[i * out_stride as usize + c] = sum;
            }
        }
        let mut got = vec![f32::NAN; out_len];
        unsafe {
            run(
                input.as_ptr().add(center + block.start),
                got.as_mut_ptr().add(block.start),
                kernel.as_ptr().add(block.start),
                &tap_indices,
                &offsets,
                bias.as_ptr().add(block.start),
                block.len(),
                channels,
                len,
                in_stride,
                out_stride,
            )
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "taps {taps} channels {channels} block {block:?} len {len} s {s}");
    }

    /// The channel-last kernels this CPU can run, by name.
    fn runnable_c_kernels() -> Vec<(&'static str, crate::routines::DepthwiseCF32)> {
        let mut kernels: Vec<(&'static str, crate::routines::DepthwiseCF32)> = vec![];
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            kernels.push(("avx2+fma", depthwise_c_f32));
        } else {
            eprintln!("SKIPPED: this CPU has no AVX2 + FMA, depthwise_c_f32 not tested");
        }
        if std::is_x86_feature_detected!("avx512f") {
            kernels.push(("avx512f", depthwise_c_f32_avx512));
        } else {
            eprintln!("SKIPPED: this CPU has no AVX-512F, depthwise_c_f32_avx512 not tested");
        }
        kernels
    }

    /// Channel counts across every vector block and tail of both kernels (8 / 32 and 16 / 64
    /// channels), point counts across their 2- and 4-point groups and remainders.
    #[test]
    fn depthwise_c_matches_fused_scalar_bit_for_bit() {
        for (name, run) in runnable_c_kernels() {
            eprintln!("testing the {name} channel-last depthwise kernel");
            for taps in [1usize, 2, 3, 9, 25] {
                let channel_counts = [1usize, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65];
                for channels in channel_counts.into_iter().chain([72, 80, 96, 144]) {
                    for len in [0usize, 1, 2, 3, 4, 5, 6, 7, 9] {
                        for s in [1isize, 2] {
                            compare_c(run, taps, channels, 0..channels, len, s);
                        }
                    }
                }
            }
            for block in [16..48, 3..37, 40..41, 8..120, 5..90] {
                compare_c(run, 9, 128, block, 5, 1);
            }
        }
    }

    /// The widest kernel the CPU can run is the one tract dispatches to.
    #[test]
    fn depthwise_c_is_the_kernel_this_host_runs() {
        let widest = runnable_c_kernels().pop().map(|(_, run)| run as usize);
        assert_eq!(crate::routines::depthwise_c_f32().map(|run| run as usize), widest);
    }

    #[test]
    fn matches_scalar_bit_for_bit() {
        for taps in [1, 2, 3, 4, 5, 9, 25, 49, 81] {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 64, 100, 224] {
                compare(taps, len, 1);
                compare(taps, len, 2);
            }
        }
    }
}
