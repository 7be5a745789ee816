#!/usr/bin/env python3
"""Expected outputs of PyTorch's bilinear resize (align_corners=False) for the shared crate's parity test.

Run once (needs torch): python tools/resize_parity.py > shared/tests/data/resize_parity.json
The output is committed; the Rust test `shared/tests/resize_parity.rs` compares against it.
"""
import json

import torch
import torch.nn.functional as F

# Fixed 8-bit test image (deterministic, not random): 7 wide, 5 high.
W, H = 7, 5
pixels = [(x * 37 + y * 91 + (x * y) % 13) % 256 for y in range(H) for x in range(W)]
img = torch.tensor(pixels, dtype=torch.float32).reshape(1, 1, H, W)

cases = []
for out_h, out_w in [(5, 7), (10, 14), (3, 4), (8, 3), (13, 11), (2, 2), (1, 1)]:
    out = F.interpolate(img, size=(out_h, out_w), mode="bilinear", align_corners=False)
    norm = (out / 255.0 - 0.5) / 0.5
    cases.append({"out_w": out_w, "out_h": out_h, "resized": out.flatten().tolist(), "normalised": norm.flatten().tolist()})

# Region (crop) then resize, as the centre zoom does: rows 1..4, cols 2..6 of the image.
crop = img[:, :, 1:4, 2:6]
out = F.interpolate(crop, size=(9, 6), mode="bilinear", align_corners=False)
region = {"x0": 2, "y0": 1, "x1": 6, "y1": 4, "out_w": 6, "out_h": 9, "resized": out.flatten().tolist()}

# Attention-map upsampling 7x7 -> 224x224 and its threshold mask bounds (the centre-zoom input).
att = torch.zeros(1, 1, 7, 7)
att[0, 0, 2, 4] = 1.0
att[0, 0, 3, 4] = 0.7
att[0, 0, 5, 1] = 0.45
up = F.interpolate(att, size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
mask = up >= 0.5 * att.max()
rows, cols = torch.nonzero(mask, as_tuple=True)
pad = 0.1 * 224
box = {
    "y0": max(int(rows.min().item() - pad), 0),
    "y1": min(int(rows.max().item() + pad), 223),
    "x0": max(int(cols.min().item() - pad), 0),
    "x1": min(int(cols.max().item() + pad), 223),
}
zoom = {"att": att.flatten().tolist(), "box": box, "upsampled_row_100": up[100].tolist()}

print(json.dumps({"torch": torch.__version__, "width": W, "height": H, "pixels": pixels,
                  "cases": cases, "region": region, "zoom": zoom}))
