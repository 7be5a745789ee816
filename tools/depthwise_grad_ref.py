#!/usr/bin/env python3
"""PyTorch's gradients of a depthwise conv2d, for host/tests/depthwise_grad.rs.

    python tools/depthwise_grad_ref.py DIR

DIR/case.json gives the geometry ({"n", "c", "h", "w", "k", "stride", "pad": [top, bottom, left, right],
"dilation"}); DIR/x.bin, w.bin, g.bin hold the input, weight and output gradient (float32, NCHW). Writes
DIR/dx.bin and DIR/dw.bin: d(sum(y * g))/dx and /dw for y = conv2d(pad(x), w, groups=c). Exit 3 when
torch is missing.
"""
import json
import sys
from pathlib import Path

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"missing Python package: {e.name}", file=sys.stderr)
    sys.exit(3)

d = Path(sys.argv[1])
case = json.loads((d / "case.json").read_text())
n, c, h, w, k = case["n"], case["c"], case["h"], case["w"], case["k"]
load = lambda name, shape: torch.from_numpy(np.fromfile(d / name, dtype="<f4").reshape(shape)).double()
x = load("x.bin", (n, c, h, w)).requires_grad_()
weight = load("w.bin", (c, 1, k, k)).requires_grad_()
top, bottom, left, right = case["pad"]
y = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, stride=case["stride"], dilation=case["dilation"], groups=c)
g = load("g.bin", tuple(y.shape))
(y * g).sum().backward()
x.grad.float().numpy().astype("<f4").tofile(d / "dx.bin")
weight.grad.float().numpy().astype("<f4").tofile(d / "dw.bin")
print(json.dumps({"y_shape": list(y.shape)}))
