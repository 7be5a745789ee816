#!/usr/bin/env python3
"""PyTorch's SiLU and ReLU6, forward and backward, for host/tests/fused_activation.rs.

    python tools/activation_grad_ref.py DIR

DIR/x.bin and DIR/g.bin hold the input and the output gradient (float32, flat). Writes, in float64
arithmetic rounded to float32: DIR/silu_y.bin, silu_dx.bin, relu6_y.bin, relu6_dx.bin, where dx is
d(sum(f(x) * g))/dx. Exit 3 when torch is missing.
"""
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
load = lambda name: torch.from_numpy(np.fromfile(d / name, dtype="<f4")).double()
g = load("g.bin")
for name, f in (("silu", F.silu), ("relu6", F.relu6)):
    x = load("x.bin").requires_grad_()
    y = f(x)
    (y * g).sum().backward()
    y.detach().float().numpy().astype("<f4").tofile(d / f"{name}_y.bin")
    x.grad.float().numpy().astype("<f4").tofile(d / f"{name}_dx.bin")
