//! The phantom generator: deterministic, every class drawn with its ground truth, right format.

use cdnet_shared::phantom::{PhantomClass, PhantomConfig, image_seed, render};

fn config(difficulty: f32) -> PhantomConfig {
    PhantomConfig { size: 128, difficulty }
}

#[test]
fn same_seed_same_image_other_seed_other_image() {
    for class in PhantomClass::ALL {
        let a = render(class, 42, &config(0.5));
        let b = render(class, 42, &config(0.5));
        let c = render(class, 43, &config(0.5));
        assert_eq!(a.pixels, b.pixels, "{class:?} is not deterministic");
        assert_eq!(a.lesion_mask, b.lesion_mask);
        assert_ne!(a.pixels, c.pixels, "{class:?} ignores the seed");
    }
}

#[test]
fn images_are_8_bit_gray_of_the_requested_size_with_real_contrast() {
    for size in [64, 100, 256] {
        let img = render(PhantomClass::Rd, 1, &PhantomConfig { size, difficulty: 0.5 });
        assert_eq!(img.size, size);
        assert_eq!(img.pixels.len(), size * size);
        assert_eq!(img.lesion_mask.len(), size * size);
        let (min, max) = img.pixels.iter().fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert_eq!(min, 0, "outside the field of view is black");
        assert!(max > 200, "the posterior wall is bright, max = {max}");
    }
}

#[test]
fn every_lesion_class_has_a_lesion_inside_the_globe_and_normal_has_none() {
    for difficulty in [0.0, 0.5, 1.0] {
        for class in PhantomClass::ALL {
            for index in 0..12 {
                let seed = image_seed(7, 0, class, index);
                let img = render(class, seed, &config(difficulty));
                let ctx = format!("{class:?} seed {seed} difficulty {difficulty}");
                if class == PhantomClass::Normal {
                    assert!(img.lesion_box.is_none(), "{ctx}: Normal has a lesion");
                    assert!(img.lesion_mask.iter().all(|&m| m == 0));
                    continue;
                }
                let lesion = img.lesion_box.unwrap_or_else(|| panic!("{ctx}: no lesion drawn"));
                let globe = img.globe_box;
                // The wall is part of the globe; allow the mask's one-pixel anti-aliasing margin.
                assert!(
                    lesion.x0 + 1 >= globe.x0
                        && lesion.y0 + 1 >= globe.y0
                        && lesion.x1 <= globe.x1 + 1
                        && lesion.y1 <= globe.y1 + 1,
                    "{ctx}: lesion {lesion:?} outside globe {globe:?}"
                );
                let area = img.lesion_mask.iter().filter(|&&m| m != 0).count();
                assert!(area >= 4, "{ctx}: lesion of {area} pixels");
            }
        }
    }
}

#[test]
fn harder_means_smaller_lesions() {
    let mean_area = |class: PhantomClass, difficulty: f32| {
        (0..20)
            .map(|i| {
                let img = render(class, image_seed(3, 0, class, i), &config(difficulty));
                img.lesion_mask.iter().filter(|&&m| m != 0).count() as f64
            })
            .sum::<f64>()
            / 20.0
    };
    for class in [PhantomClass::Iot, PhantomClass::Rd, PhantomClass::Pss, PhantomClass::Vh] {
        let (easy, hard) = (mean_area(class, 0.1), mean_area(class, 0.9));
        assert!(hard < easy, "{class:?}: hard {hard} ≥ easy {easy}");
    }
}
