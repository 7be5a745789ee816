#!/usr/bin/env python3
"""The same CDNet training step in PyTorch + timm (CPU), for comparing against
`cargo bench -p cdnet-host --bench train_step`.

    python tools/torch_step_bench.py b0 8 224 3     # variant, batch, size, timed steps

It follows the reference model (tf_efficientnet_bX features_only, adapters 1024/2048, WSLL with M=32,
BAP + 32->1 weighting, projection 2048-128-128, cls_head/en_fc on detached features). Crops use
torchvision-style resized crops at fixed random boxes; the exact CMZ sampling does not matter for
speed. Prints seconds per step, images/s and peak RSS.
"""
import resource
import sys
import time

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F


class Cdnet(nn.Module):
    def __init__(self, variant: str, classes: int = 5, m: int = 32):
        super().__init__()
        self.enc = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, features_only=True)
        c14, c7 = self.enc.feature_info.channels()[3:5]
        self.adap14 = nn.Conv2d(c14, 1024, 1)
        self.adap7 = nn.Conv2d(c7, 2048, 1)
        self.tex = nn.Sequential(nn.Conv2d(1024, m, 1, bias=False), nn.BatchNorm2d(m, eps=1e-3), nn.ReLU())
        self.sem = nn.Sequential(nn.Conv2d(2048, m, 1, bias=False), nn.BatchNorm2d(m, eps=1e-3), nn.ReLU())
        self.weight = nn.Conv1d(m, 1, 1)
        self.proj = nn.Sequential(nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, 128))
        self.cls = nn.Sequential(nn.LeakyReLU(), nn.Linear(2048, classes))
        self.en_fc = nn.Sequential(nn.LeakyReLU(), nn.Linear(4096, classes))

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
    not_self = 1 - torch.eye(n)
    pos = (lab[:, None] == lab[None, :]).float() * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    return -((pos * log_prob).sum(1) / pos.sum(1)).mean()


def barlow(z1, z2, d=0.005):
    bn = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    off = (c ** 2).sum() - (torch.diagonal(c) ** 2).sum()
    return on + d * off


def main():
    variant = sys.argv[1] if len(sys.argv) > 1 else "b0"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.manual_seed(0)
    model = Cdnet(variant)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.97, 0.999), weight_decay=5e-4)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    y = torch.arange(batch) % 5
    times = []
    for step in range(steps + 1):
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
        dt = time.perf_counter() - t0
        if step > 0:
            times.append(dt)
        print(f"step {step}: {dt:.2f} s, loss {loss.item():.4f}", file=sys.stderr)
    mean = sum(times) / len(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch train_step {variant} batch {batch} {size}x{size}: {mean:.2f} s/step, {batch / mean:.2f} images/s, "
          f"peak RSS {rss:.0f} MiB ({torch.get_num_threads()} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
