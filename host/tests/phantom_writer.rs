//! Writing phantom data sets to disk.

use cdnet_host::phantom::{PhantomClass, PhantomConfig, WriteOptions, render, write_image_folder};

fn config(difficulty: f32) -> PhantomConfig {
    PhantomConfig { size: 128, difficulty }
}

#[test]
fn writes_an_image_folder_with_masks_and_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("set");
    let options = WriteOptions {
        out: out.clone(),
        per_class: 3,
        val_per_class: 0,
        test_per_class: 2,
        seed: 11,
        config: config(0.5),
        progress: false,
    };
    let summary = write_image_folder(&options).unwrap();
    assert_eq!(summary.images, 25);
    for (split, count) in [("train", 3), ("test", 2)] {
        for class in PhantomClass::ALL {
            let folder = out.join(split).join(class.label());
            let pngs: Vec<_> = std::fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "png"))
                .collect();
            assert_eq!(pngs.len(), count, "{}", folder.display());
            for png in pngs {
                let img = image::open(&png).unwrap();
                assert_eq!(img.color(), image::ColorType::L8);
                assert_eq!((img.width(), img.height()), (128, 128));
                let sidecar: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(png.with_extension("json")).unwrap()).unwrap();
                assert_eq!(sidecar["class"], class.label());
                assert_eq!(sidecar["lesion_box"].is_null(), class == PhantomClass::Normal);
                let mask = out.join(split).join("masks").join(class.label()).join(png.file_name().unwrap());
                let mask = image::open(mask).unwrap().into_luma8();
                // Same image as rendering directly with the recorded seed.
                let again = render(class, sidecar["seed"].as_u64().unwrap(), &config(0.5));
                assert_eq!(img.into_luma8().into_raw(), again.pixels);
                assert_eq!(mask.into_raw(), again.lesion_mask);
            }
        }
    }
    // The data set describes itself: class order and the crop that removes the scanner text.
    let described = cdnet_host::data::read_dataset_file(&out).unwrap().unwrap();
    assert_eq!(described.classes.unwrap(), ["Normal", "IOT", "RD", "PSS", "VH"]);
    assert_eq!(described.crop, Some(cdnet_host::phantom::PHANTOM_CROP));
    // Never overwrites.
    let err = write_image_folder(&options).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
}
