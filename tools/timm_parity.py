#!/usr/bin/env python3
"""Reference numbers for the Rust port: timm's tf_efficientnet_b0/b3 feature taps, and the HCD loss.

Run once with torch + timm installed (not needed in CI):

    python tools/timm_parity.py host/tests/data/parity

For each backbone it writes:
  <name>.json      every timm state_dict entry (name, shape, how its values were drawn), the input seed
  <name>.bin       timm's outputs for that input: feat14 then feat7, float32 little-endian

Weights are not stored. Every tensor is filled from a counter-based PRNG (splitmix64), which the Rust
test reproduces bit for bit. It then writes the same weights under timm's names to a safetensors file
and loads them through the real loader, name mapping included. So the committed files stay small,
and the test still proves that padding, BatchNorm, SE and the name mapping match timm.

It also writes hcd.json: fixed projection vectors and labels, with the SupCon (L_pp) and Barlow-Twins
decoupling (L_dc) values computed by an independent NumPy implementation of the reference formulas.
"""
import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch

MASK64 = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser on uint64 counters."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seed: int, n: int, lo: float, hi: float) -> np.ndarray:
    """n floats in [lo, hi): u_i = top 24 bits of splitmix64(seed << 32 | i) / 2^24, in float32."""
    counters = (np.uint64(seed) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
    u = (splitmix64(counters) >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
    return (np.float32(lo) + np.float32(hi - lo) * u).astype(np.float32)


def value_range(name: str, shape) -> tuple:
    """How each kind of tensor is drawn: sane activations through the whole network."""
    if name.endswith("running_mean"):
        return (-0.1, 0.1)
    if name.endswith("running_var"):
        return (0.5, 1.5)
    if len(shape) == 1 and name.endswith(".weight"):  # BN gamma
        return (0.5, 1.0)
    if name.endswith(".bias"):
        return (-0.1, 0.1)
    fan_in = int(np.prod(shape[1:]))
    bound = float(np.sqrt(3.0 / fan_in))
    return (-bound, bound)


def backbone(name: str, out: Path) -> None:
    model = timm.create_model(name, pretrained=False, features_only=True)
    model.eval()
    manifest = []
    state = model.state_dict()
    with torch.no_grad():
        for index, (key, tensor) in enumerate(state.items()):
            if not tensor.is_floating_point():
                continue  # num_batches_tracked
            seed = 1000 + index
            lo, hi = value_range(key, tuple(tensor.shape))
            values = uniform(seed, tensor.numel(), lo, hi).reshape(tuple(tensor.shape))
            tensor.copy_(torch.from_numpy(values))
            manifest.append({"name": key, "shape": list(tensor.shape), "seed": seed, "lo": lo, "hi": hi})
        model.load_state_dict(state)
        input_seed, size = 7, 224
        x = torch.from_numpy(uniform(input_seed, 3 * size * size, -1.0, 1.0).reshape(1, 3, size, size))
        feats = model(x)
    feat14, feat7 = feats[3], feats[4]
    info = {
        "model": name,
        "timm": timm.__version__,
        "torch": torch.__version__,
        "input": {"seed": input_seed, "shape": [1, 3, size, size], "lo": -1.0, "hi": 1.0},
        "feat14_shape": list(feat14.shape),
        "feat7_shape": list(feat7.shape),
        "channels": [int(f.shape[1]) for f in feats],
        "tensors": manifest,
    }
    (out / f"{name}.json").write_text(json.dumps(info, indent=1))
    np.concatenate([feat14.numpy().ravel(), feat7.numpy().ravel()]).astype("<f4").tofile(out / f"{name}.bin")
    print(name, "params", sum(int(np.prod(t["shape"])) for t in manifest), "feat14", list(feat14.shape),
          "feat7", list(feat7.shape), "feat7 absmax", float(feat7.abs().max()))


def supcon(features: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """SupConLoss(contrast_mode='all') as in HCD_Loss.py: features [B, V, D] (already L2-normalised)."""
    b, v, _ = features.shape
    z = np.concatenate([features[:, i, :] for i in range(v)], axis=0).astype(np.float64)  # view-major
    logits = z @ z.T / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    lab = np.tile(labels, v)
    n = b * v
    not_self = ~np.eye(n, dtype=bool)
    pos = (lab[:, None] == lab[None, :]) & not_self
    exp = np.exp(logits) * not_self
    log_prob = logits - np.log(exp.sum(axis=1, keepdims=True))
    return float(np.mean(-(pos * log_prob).sum(axis=1) / pos.sum(axis=1)))


def barlow(z1: np.ndarray, z2: np.ndarray, off_weight: float) -> tuple:
    """BatchNorm1d(affine=False) in train mode (biased variance, eps 1e-5), c = bn(z1)^T bn(z2) / B."""
    def bn(z):
        z = z.astype(np.float64)
        return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + 1e-5)
    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on = float(((np.diag(c) - 1.0) ** 2).sum())
    off = float((c ** 2).sum() - (np.diag(c) ** 2).sum())
    return on, off, on + off_weight * off


def hcd(out: Path) -> None:
    b, v, d = 6, 3, 16
    raw = uniform(99, b * v * d, -1.0, 1.0).reshape(b, v, d)
    feats = raw / np.linalg.norm(raw, axis=2, keepdims=True)
    labels = np.array([0, 1, 0, 2, 1, 0])
    on, off, dc = barlow(feats[:, 1, :], feats[:, 2, :], 0.005)
    cases = {
        "batch": b, "views": v, "dim": d, "seed": 99, "labels": labels.tolist(),
        "supcon": supcon(feats, labels, 0.07),
        "decouple_on": on, "decouple_off": off, "decouple": dc,
        "hcd_lambda_0_1": supcon(feats, labels, 0.07) + 0.1 * dc,
    }
    (out / "hcd.json").write_text(json.dumps(cases, indent=1))
    print("hcd", cases["supcon"], dc)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "host/tests/data/parity")
    out.mkdir(parents=True, exist_ok=True)
    for name in ["tf_efficientnet_b0", "tf_efficientnet_b3"]:
        backbone(name, out)
    hcd(out)
