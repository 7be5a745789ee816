//! Phantom rendering speed at 256×256 (floor: ≥ 200 images/s on the 2-core dev machine, all cores).

use cdnet_shared::phantom::{PhantomClass, PhantomConfig, image_seed, render};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

fn phantom(c: &mut Criterion) {
    let config = PhantomConfig { size: 256, difficulty: 0.5 };
    let mut group = c.benchmark_group("phantom_256");
    group.throughput(Throughput::Elements(1));
    group.bench_function("render_one_thread", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            let class = PhantomClass::ALL[i % 5];
            render(class, image_seed(0, 0, class, i), &config)
        })
    });
    let batch = 64;
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("render_all_threads", |b| {
        b.iter(|| {
            (0..batch)
                .into_par_iter()
                .map(|i| {
                    let class = PhantomClass::ALL[i % 5];
                    render(class, image_seed(1, 0, class, i), &config).pixels.len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, phantom);
criterion_main!(benches);
