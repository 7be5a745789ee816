#!/usr/bin/env python3
"""The same CDNet training step in PyTorch + timm, for comparing against
`cargo bench -p cdnet-host --bench train_step` (CPU) and `cdnet bench-step` (CPU or CUDA).

    python tools/torch_step_bench.py b0 8 224 3     # variant, batch, size, timed steps
    python tools/torch_step_bench.py b3 64 224 10 --device cuda --warmup 3 --json out.json
    python tools/torch_step_bench.py lite0 64 224 10 --widths 512 1024   # configs/field-lite0.toml

It follows the reference model (tf_efficientnet_bX features_only, adapters 1024/2048, WSLL with M=32,
BAP + 32->1 weighting, projection 2048-128-128, cls_head/en_fc on detached features). Crops use
torchvision-style resized crops at fixed random boxes; the exact CMZ sampling does not matter for
speed. Prints seconds per step, images/s and peak RSS (and on CUDA the peak memory PyTorch's
allocator reserved).
"""
import argparse
import json
import resource
import sys
import time

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F


class Cdnet(nn.Module):
    def __init__(self, variant: str, classes: int = 5, m: int = 32, tex: int = 1024, feat: int = 2048):
        super().__init__()
        self.enc = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, features_only=True)
        c14, c7 = self.enc.feature_info.channels()[3:5]
        self.adap14 = nn.Conv2d(c14, tex, 1)
        self.adap7 = nn.Conv2d(c7, feat, 1)
        self.tex = nn.Sequential(nn.Conv2d(tex, m, 1, bias=False), nn.BatchNorm2d(m, eps=1e-3), nn.ReLU())
        self.sem = nn.Sequential(nn.Conv2d(feat, m, 1, bias=False), nn.BatchNorm2d(m, eps=1e-3), nn.ReLU())
        self.weight = nn.Conv1d(m, 1, 1)
        self.proj = nn.Sequential(nn.Linear(feat, 128), nn.ReLU(), nn.Linear(128, 128))
        self.cls = nn.Sequential(nn.LeakyReLU(), nn.Linear(feat, classes))
        self.en_fc = nn.Sequential(nn.LeakyReLU(), nn.Linear(2 * feat, classes))

    def extract(self, x):
        feats = self.enc(x)
        f14, f7 = self.adap14(feats[3]), self.adap7(feats[4])
        att = self.sem(f7) + F.avg_pool2d(self.tex(f14), 2)
        b, mm, h, w = att.shape
        fm = torch.einsum("imjk,injk->imn", att, f7) / (h * w)
        return self.weight(fm).view(b, -1), att


def supcon(z, labels, t=0.07):
    v = z.shape[1]
    zz = torch.cat(torch.unbind(z, 1), 0)
    logits = zz @ zz.T / t
    logits = logits - logits.max(1, keepdim=True)[0].detach()
    lab = labels.repeat(v)
    n = zz.shape[0]
    not_self = 1 - torch.eye(n, device=z.device)
    pos = (lab[:, None] == lab[None, :]).float() * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    return -((pos * log_prob).sum(1) / pos.sum(1)).mean()


def barlow(z1, z2, d=0.005):
    bn = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    off = (c ** 2).sum() - (torch.diagonal(c) ** 2).sum()
    return on + d * off


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", nargs="?", default="b0")
    p.add_argument("batch", nargs="?", type=int, default=8)
    p.add_argument("size", nargs="?", type=int, default=224)
    p.add_argument("steps", nargs="?", type=int, default=3, help="timed steps")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--widths", type=int, nargs=2, default=[1024, 2048], metavar=("TEXTURE", "FEATURE"),
                   help="adapter widths (model.texture_channels, model.feature_dim)")
    p.add_argument("--json", help="also write the report as JSON here")
    return p.parse_args()


def main():
    a = parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = Cdnet(a.variant, tex=a.widths[0], feat=a.widths[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.97, 0.999), weight_decay=5e-4)
    x = (torch.rand(a.batch, 3, a.size, a.size) * 2 - 1).to(device)
    y = (torch.arange(a.batch) % 5).to(device)
    size = a.size
    step_seconds, losses = [], []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        fg, att = model.extract(x)
        crops = []
        for _ in range(2):
            i, j, h, w = 30, 40, 150, 130
            crops.append(F.interpolate(x[:, :, i:i + h, j:j + w], size=(size, size), mode="bilinear", align_corners=False))
        f1, _ = model.extract(crops[0])
        f2, _ = model.extract(crops[1])
        h = [F.normalize(model.proj(f), dim=1) for f in (fg, f1, f2)]
        loss = supcon(torch.stack(h, 1), y) + 0.1 * barlow(h[1], h[2])
        for f in (fg, f1, f2):
            loss = loss + F.cross_entropy(model.cls(f.detach()), y)
        loss = loss + F.cross_entropy(model.en_fc(torch.cat([fg.detach(), (f1 + f2).detach()], 1)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()  # waits for the step on CUDA
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        step_seconds.append(dt)
        losses.append(value)
        print(f"step {step}: {dt:.3f} s, loss {value:.4f}", file=sys.stderr)
    timed = step_seconds[a.warmup:]
    mean = sum(timed) / len(timed)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "backbone": a.variant, "size": size, "batch": a.batch, "warmup": a.warmup, "steps": a.steps,
        "device": a.device, "seconds_per_step": mean, "images_per_second": a.batch / mean,
        "step_seconds": step_seconds, "losses": losses, "peak_rss_mib": rss,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "timm": timm.__version__,
    }
    gpu = ""
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
        report["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
        report["peak_gpu_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        gpu = f", peak GPU reserved {report['peak_gpu_reserved_mib']:.0f} MiB on {report['gpu']}"
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    print(f"torch train_step {a.variant} batch {a.batch} {size}x{size} on {a.device}: {mean:.3f} s/step, "
          f"{a.batch / mean:.2f} images/s, peak RSS {rss:.0f} MiB{gpu} "
          f"({torch.get_num_threads()} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
