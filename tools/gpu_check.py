#!/usr/bin/env python3
"""The GPU check: run inside the folder `cargo xtask gpu-check` writes, on a machine with one NVIDIA
GPU, a CUDA 13 driver, PyTorch + timm, and no network.

    ./run.sh OUT [--budget SECONDS]

Stages (each with its own time limit, all inside the budget; one that fails is recorded and the
next one runs):
  1. burn-cuda training step, configs/paper-b3.toml, batch 64 at 224 px (`cdnet bench-step`);
  2. the same step in PyTorch eager + timm (`torch_step_bench.py --device cuda`);
  3. a short end-to-end training of configs/e2e.toml on data/ (phantom, 224 px) on the GPU, then
     `cdnet export` (CPU, burn vs tract parity) to a bundle, packed as OUT/bundle.tar;
  4. and 5. as 1. and 2. for configs/field-lite0.toml at 224 px.
Peak GPU memory of every stage is read with nvidia-smi (the same way for burn and PyTorch).
Writes OUT/gpu-check.json (everything measured), OUT/gpu-check.log (every stage's output) and
OUT/cubecl-compilation.log (one line per kernel burn-cuda compiled; written through cubecl.toml).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def smi(query):
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


class GpuMemoryPeak:
    """Polls nvidia-smi's memory.used every 100 ms while a stage runs."""

    def __init__(self):
        self.peak, self.base, self._stop = None, None, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            used = smi("memory.used")
            if used is not None:
                mib = float(used)
                self.base = mib if self.base is None else self.base
                self.peak = mib if self.peak is None else max(self.peak, mib)
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def library_path():
    """Directories holding NVRTC (burn-cuda compiles its kernels with it at run time)."""
    dirs = []
    for pattern in ["/usr/local/cuda*/lib64", "/usr/local/cuda*/targets/*/lib", "/usr/lib/x86_64-linux-gnu",
                    "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib",
                    "/usr/local/lib/python3*/dist-packages/nvidia/*/lib"]:
        for d in sorted(glob.glob(pattern)):
            if glob.glob(os.path.join(d, "libnvrtc.so*")) and d not in dirs:
                dirs.append(d)
    try:
        import torch  # its wheel carries an NVRTC too
        for d in glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "*", "lib")):
            d = os.path.realpath(d)
            if glob.glob(os.path.join(d, "libnvrtc.so*")) and d not in dirs:
                dirs.append(d)
    except ImportError:
        pass
    return dirs


class Check:
    def __init__(self, out, budget, only):
        self.out, self.deadline, self.only = out, time.monotonic() + budget, only
        self.log = open(os.path.join(out, "gpu-check.log"), "w")
        self.env = dict(os.environ)
        nvrtc = library_path()
        self.env["LD_LIBRARY_PATH"] = ":".join(nvrtc + [self.env.get("LD_LIBRARY_PATH", "")])
        self.report = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nvrtc_dirs": nvrtc,
                       "gpu": smi("name"), "driver": smi("driver_version"), "gpu_memory_mib": smi("memory.total"),
                       "stages": {}}

    def stage(self, name, command, limit, report_file=None):
        left = self.deadline - time.monotonic()
        result = {"command": " ".join(command)}
        self.report["stages"][name] = result
        if self.only and name not in self.only:
            result["status"] = "skipped: not selected"
            return result
        if left < 20:
            result["status"] = "skipped: out of budget"
            return result
        limit = min(limit, left)
        self.log.write(f"\n=== {name}: {' '.join(command)} (limit {limit:.0f} s)\n")
        self.log.flush()
        start = time.monotonic()
        with GpuMemoryPeak() as memory:
            try:
                done = subprocess.run(command, cwd=HERE, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                      timeout=limit)
                result["status"] = "ok" if done.returncode == 0 else f"failed: exit {done.returncode}"
            except subprocess.TimeoutExpired:
                result["status"] = f"failed: over its {limit:.0f} s limit"
        result["seconds"] = round(time.monotonic() - start, 1)
        if memory.peak is not None:
            result["peak_gpu_used_mib"] = memory.peak
            result["gpu_used_before_mib"] = memory.base
        if report_file and os.path.exists(report_file):
            with open(report_file) as f:
                result["report"] = json.load(f)
        self.log.write(f"=== {name}: {result['status']} in {result['seconds']} s\n")
        self.log.flush()
        print(f"{name}: {result['status']} ({result['seconds']} s)", flush=True)
        return result

    def bench_pair(self, label, config, torch_model, batch, warmup, steps, limits):
        """`torch_model`: the variant, then any options (after the positionals: --widths takes two)."""
        burn_json = os.path.join(self.out, f"burn-{label}.json")
        torch_json = os.path.join(self.out, f"torch-{label}.json")
        burn = self.stage(f"burn-{label}", ["./cdnet", "bench-step", "--config", config, "--set",
                                            "model.input_size=224", "--batch", str(batch), "--warmup",
                                            str(warmup), "--steps", str(steps), "--backend", "cuda",
                                            "--json", burn_json], limits[0], burn_json)
        torch = self.stage(f"torch-{label}", [sys.executable, "torch_step_bench.py", torch_model[0], str(batch), "224",
                                              str(steps), *torch_model[1:], "--warmup", str(warmup), "--device", "cuda", "--json",
                                              torch_json], limits[1], torch_json)
        for path in (burn_json, torch_json):
            if os.path.exists(path):
                os.remove(path)  # folded into gpu-check.json
        if "report" in burn and "report" in torch:
            b, t = burn["report"], torch["report"]
            self.report[f"ratio_{label}"] = b["images_per_second"] / t["images_per_second"]
            b["loss_falls"] = b["losses"][-1] < b["losses"][0]

    def end_to_end(self, autotune):
        # Less tuning: this stage checks that a GPU-trained model exports, not its speed.
        write_cubecl_config(self.out, autotune)
        run = os.path.join(self.out, "e2e-run")
        bundle = os.path.join(self.out, "bundle")
        train = self.stage("e2e-train", ["./cdnet", "-q", "train", "--data", "data", "--config", "configs/e2e.toml",
                                         "--backend", "cuda", "--out", run], self.train_limit)
        if train["status"] != "ok":
            return
        metrics = os.path.join(run, "metrics.json")
        if os.path.exists(metrics):
            with open(metrics) as f:
                train["metrics"] = json.load(f)
        export = self.stage("e2e-export", ["./cdnet", "-q", "export", "--model", run, "--out", bundle, "--data",
                                           "data"], 90)
        if export["status"] == "ok":
            with tarfile.open(os.path.join(self.out, "bundle.tar"), "w") as tar:
                tar.add(bundle, arcname="bundle")
            with open(os.path.join(bundle, "model.json")) as f:
                card = json.load(f)
            export["parity_burn_vs_tract_max_abs"] = card.get("export", {}).get("parity_burn_vs_tract_max_abs")
            export["metrics"] = card.get("metrics")
        subprocess.run(["rm", "-rf", run, bundle])

    def finish(self):
        self.report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(os.path.join(self.out, "gpu-check.json"), "w") as f:
            json.dump(self.report, f, indent=2)
        for key, value in self.report.items():
            if key.startswith("ratio_"):
                print(f"{key}: burn-cuda / PyTorch images/s = {value:.3f}")


def write_cubecl_config(out, autotune="balanced"):
    """CubeCL reads cubecl.toml from the working directory: log every kernel compilation and every
    autotune decision, so a slow first step can be told apart from a slow kernel; `autotune` is
    CubeCL's tuning effort (balanced is its default)."""
    with open(os.path.join(HERE, "cubecl.toml"), "w") as f:
        f.write(f"""[compilation.logger]
level = "basic"
file = "{out}/cubecl-compilation.log"
append = true

[autotune]
level = "{autotune}"

[autotune.logger]
level = "minimal"
file = "{out}/cubecl-autotune.log"
append = true
""")


def main():
    parser = argparse.ArgumentParser(description="CDNet GPU check")
    parser.add_argument("out", help="folder for gpu-check.json, gpu-check.log and bundle.tar")
    # burn-cuda compiles and autotunes every kernel shape once per process: b3's first training step
    # took over 165 s on an H200 (docs/performance.md), so the defaults are generous.
    parser.add_argument("--budget", type=float, default=2400, help="seconds for all stages together")
    parser.add_argument("--only", default="", help="comma-separated stage names to run (default: all)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each step benchmark")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each step benchmark")
    parser.add_argument("--limits", type=float, nargs=3, default=[900, 120, 900], metavar=("BURN", "TORCH", "TRAIN"),
                        help="seconds for the b3 burn and torch benchmarks and the end-to-end training")
    parser.add_argument("--e2e-autotune", default="minimal", help="CubeCL autotune level of the end-to-end stage")
    parser.add_argument("--bench-autotune", default="balanced",
                        help="CubeCL autotune level of the step benchmarks (minimal, balanced, extensive, full)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = os.path.abspath(args.out)
    write_cubecl_config(out, args.bench_autotune)
    check = Check(out, args.budget, {s for s in args.only.split(",") if s})
    check.report["bench_autotune"], check.report["e2e_autotune"] = args.bench_autotune, args.e2e_autotune
    try:
        import torch
        import timm
        check.report["torch"], check.report["timm"] = torch.__version__, timm.__version__
    except ImportError as e:
        check.report["torch"] = f"missing: {e}"
    burn_limit, torch_limit, check.train_limit = args.limits
    check.bench_pair("b3-224-b64", "configs/paper-b3.toml", ["b3"], 64, args.warmup, args.steps,
                     (burn_limit, torch_limit))
    check.end_to_end(args.e2e_autotune)
    write_cubecl_config(out, args.bench_autotune)
    check.bench_pair("lite0-224-b64", "configs/field-lite0.toml", ["lite0", "--widths", "512", "1024"], 64,
                     args.warmup, args.steps, (120, 45))
    check.finish()


if __name__ == "__main__":
    main()
