//! f32 binary kernels, by a scalar and element-wise against a same-length operand, compiled for
//! AVX-512F and AVX2. Without them x86_64 runs the generic kernels, which the x86-64 baseline
//! compiles to SSE2: four lanes. They are the steps of a binop chain (a dequantisation's scale,
//! a ReLU6's bounds, a residual add) and of the scalar ops a graph keeps. Each kernel's loop is
//! the generic kernel's, compiled for wider vectors, so it computes what the generic one does,
//! bit for bit (`min`/`max` keep `f32::min`/`f32::max`'s rule for NaN).

macro_rules! bin_f32_kernels {
    ($feature:literal, $isa:ident, $lanes:expr;
     $($op:ident: $by_scalar:ident, $unicast:ident, |$a:ident, $b:ident| $body:expr;)*) => {
        $(
            routine_by_scalar_rust!(x86_64;
                f32,
                $by_scalar,
                $lanes,
                $lanes,
                fn run(x: &mut [f32], s: f32) {
                    debug_assert!(x.len() % Self::nr() == 0);
                    #[target_feature(enable = $feature)]
                    unsafe fn wide(x: &mut [f32], $b: f32) {
                        x.iter_mut().for_each(|$a| *$a = $body)
                    }
                    // Safety: the routine runs only where the CPU has the feature (`isa`).
                    unsafe { wide(x, s) }
                },
                op($op),
                bin,
                isa($isa)
            );

            routine_unicast_rust!(x86_64;
                f32,
                $unicast,
                $lanes,
                $lanes,
                fn run(a: &mut [f32], b: &[f32]) {
                    debug_assert!(a.len() == b.len());
                    debug_assert!(a.len() % Self::nr() == 0);
                    #[target_feature(enable = $feature)]
                    unsafe fn wide(a: &mut [f32], b: &[f32]) {
                        a.iter_mut().zip(b.iter()).for_each(|($a, &$b)| *$a = $body)
                    }
                    // Safety: as above.
                    unsafe { wide(a, b) }
                },
                op($op),
                isa($isa)
            );
        )*
    };
}

bin_f32_kernels!("avx512f", X86_64Avx512f, 16;
    Mul: x86_64_avx512f_by_scalar_mul_f32, x86_64_avx512f_unicast_mul_f32, |a, b| *a * b;
    Add: x86_64_avx512f_by_scalar_add_f32, x86_64_avx512f_unicast_add_f32, |a, b| *a + b;
    Sub: x86_64_avx512f_by_scalar_sub_f32, x86_64_avx512f_unicast_sub_f32, |a, b| *a - b;
    SubF: x86_64_avx512f_by_scalar_subf_f32, x86_64_avx512f_unicast_subf_f32, |a, b| b - *a;
    Min: x86_64_avx512f_by_scalar_min_f32, x86_64_avx512f_unicast_min_f32, |a, b| a.min(b);
    Max: x86_64_avx512f_by_scalar_max_f32, x86_64_avx512f_unicast_max_f32, |a, b| a.max(b);
);

bin_f32_kernels!("avx2", X86_64Avx2, 8;
    Mul: x86_64_avx2_by_scalar_mul_f32, x86_64_avx2_unicast_mul_f32, |a, b| *a * b;
    Add: x86_64_avx2_by_scalar_add_f32, x86_64_avx2_unicast_add_f32, |a, b| *a + b;
    Sub: x86_64_avx2_by_scalar_sub_f32, x86_64_avx2_unicast_sub_f32, |a, b| *a - b;
    SubF: x86_64_avx2_by_scalar_subf_f32, x86_64_avx2_unicast_subf_f32, |a, b| b - *a;
    Min: x86_64_avx2_by_scalar_min_f32, x86_64_avx2_unicast_min_f32, |a, b| a.min(b);
    Max: x86_64_avx2_by_scalar_max_f32, x86_64_avx2_unicast_max_f32, |a, b| a.max(b);
);

#[cfg(test)]
mod same_as_generic_tests {
    use super::*;
    use crate::frame::element_wise::{ElementWise, ElementWiseImpl, ElementWiseKer};
    use crate::frame::unicast::{Unicast, UnicastImpl, UnicastKer};
    use crate::generic::by_scalar::*;
    use crate::generic::unicast::*;
    use crate::isa::Isa;
    use tract_data::prelude::Tensor;

    /// The values where two compilations of one loop could part: NaN, signed zeros, infinities,
    /// subnormals, ties; then a sweep.
    fn values() -> Vec<f32> {
        let specials = [f32::NAN, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40, 6.0];
        let sweep = (0..150).map(|i| (i as f32 - 75.0) * 0.137);
        specials.iter().copied().chain(sweep).chain(specials.iter().map(|x| -x)).collect()
    }

    fn same_bits(found: &[f32], expected: &[f32]) -> bool {
        found.len() == expected.len()
            && found
                .iter()
                .zip(expected)
                .all(|(f, e)| (f.is_nan() && e.is_nan()) || f.to_bits() == e.to_bits())
    }

    fn runnable(isa: Isa) -> bool {
        let here = crate::isa::native().has(isa);
        if !here {
            eprintln!("SKIPPED: this CPU has no {isa:?}, its binary kernels were not compared");
        }
        here
    }

    /// `K` gives what the generic kernel `G` gives, bit for bit, on every value, every length up
    /// to a few vectors, and a start off the kernels' alignment (their head and tail paths).
    fn by_scalar_same<K, G>(isa: Isa)
    where
        K: ElementWiseKer<f32, f32> + Clone,
        G: ElementWiseKer<f32, f32> + Clone,
    {
        if !runnable(isa) {
            return;
        }
        let xs = values();
        for s in [0.0, -0.0, 6.0, -1.5, f32::NAN, f32::INFINITY] {
            for (start, len) in (0..2).flat_map(|start| (0..70).map(move |len| (start, len))) {
                let mut found = xs[start..start + len].to_vec();
                let mut expected = found.clone();
                ElementWiseImpl::<K, f32, f32>::new().run_with_params(&mut found, s).unwrap();
                ElementWiseImpl::<G, f32, f32>::new().run_with_params(&mut expected, s).unwrap();
                let name = K::name();
                assert!(same_bits(&found, &expected), "{name} by {s}, {len} values: {found:?}");
            }
        }
    }

    fn unicast_same<K, G>(isa: Isa)
    where
        K: UnicastKer<f32> + Clone,
        G: UnicastKer<f32> + Clone,
    {
        if !runnable(isa) {
            return;
        }
        // The kernels want both operands equally far from their alignment: both 64-aligned,
        // then sliced from the same start.
        let aligned = |v: &[f32]| unsafe { Tensor::from_slice_align(v, 64).unwrap() };
        let xs = values();
        let ys: Vec<f32> = xs.iter().rev().copied().collect();
        let b_whole = aligned(&ys);
        let b_whole = b_whole.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap();
        for (start, len) in (0..2).flat_map(|start| (0..xs.len() - 2).map(move |len| (start, len))) {
            let b = &b_whole[start..start + len];
            let mut found = aligned(&xs);
            let mut expected = aligned(&xs);
            let run = |ker: &dyn Unicast<f32>, a: &mut Tensor| {
                let mut ram = a.try_as_plain_ram_mut().unwrap();
                let a = ram.as_slice_mut::<f32>().unwrap();
                ker.run(&mut a[start..start + len], b).unwrap();
                a[start..start + len].to_vec()
            };
            let found = run(&UnicastImpl::<K, f32>::new(), &mut found);
            let expected = run(&UnicastImpl::<G, f32>::new(), &mut expected);
            assert!(same_bits(&found, &expected), "{}, {len} values: {found:?}", K::name());
        }
    }

    macro_rules! same_as_generic {
        ($isa:ident;
         $($test:ident: $by_scalar:ident = $g_by_scalar:ident, $unicast:ident = $g_unicast:ident;)*) => {
            $(
                #[test]
                fn $test() {
                    by_scalar_same::<$by_scalar, $g_by_scalar>(Isa::$isa);
                    unicast_same::<$unicast, $g_unicast>(Isa::$isa);
                }
            )*
        };
    }

    same_as_generic!(X86_64Avx512f;
        avx512f_mul: x86_64_avx512f_by_scalar_mul_f32 = SMulByScalar4,
            x86_64_avx512f_unicast_mul_f32 = SUnicastMul4;
        avx512f_add: x86_64_avx512f_by_scalar_add_f32 = SAddByScalar4,
            x86_64_avx512f_unicast_add_f32 = SUnicastAdd4;
        avx512f_sub: x86_64_avx512f_by_scalar_sub_f32 = SSubByScalar4,
            x86_64_avx512f_unicast_sub_f32 = SUnicastSub4;
        avx512f_subf: x86_64_avx512f_by_scalar_subf_f32 = SSubFByScalar4,
            x86_64_avx512f_unicast_subf_f32 = SUnicastSubF4;
        avx512f_min: x86_64_avx512f_by_scalar_min_f32 = SMinByScalar4,
            x86_64_avx512f_unicast_min_f32 = SUnicastMin4;
        avx512f_max: x86_64_avx512f_by_scalar_max_f32 = SMaxByScalar4,
            x86_64_avx512f_unicast_max_f32 = SUnicastMax4;
    );

    same_as_generic!(X86_64Avx2;
        avx2_mul: x86_64_avx2_by_scalar_mul_f32 = SMulByScalar4,
            x86_64_avx2_unicast_mul_f32 = SUnicastMul4;
        avx2_add: x86_64_avx2_by_scalar_add_f32 = SAddByScalar4,
            x86_64_avx2_unicast_add_f32 = SUnicastAdd4;
        avx2_sub: x86_64_avx2_by_scalar_sub_f32 = SSubByScalar4,
            x86_64_avx2_unicast_sub_f32 = SUnicastSub4;
        avx2_subf: x86_64_avx2_by_scalar_subf_f32 = SSubFByScalar4,
            x86_64_avx2_unicast_subf_f32 = SUnicastSubF4;
        avx2_min: x86_64_avx2_by_scalar_min_f32 = SMinByScalar4,
            x86_64_avx2_unicast_min_f32 = SUnicastMin4;
        avx2_max: x86_64_avx2_by_scalar_max_f32 = SMaxByScalar4,
            x86_64_avx2_unicast_max_f32 = SUnicastMax4;
    );
}
