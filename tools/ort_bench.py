"""onnxruntime side of the tract-vs-onnxruntime benchmark (docs/performance.md).

usage: ort_bench.py BUNDLE THREADS [FRAMES]

Runs the bundle's inference path the way the edge does — backbone on the frame, backbone on the
centre-zoom view (bundles with `zoom_inference`), fused head — and prints ms/frame, the graph's multiply-adds (Conv, MatMul, Gemm;
needs the `onnx` package, see requirements-bench.txt) and the peak RSS of this process.
"""
import json
import resource
import sys
import time

import numpy as np
import onnxruntime as ort


def macs(path, n):
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    model = onnx.load(path)
    for i in model.graph.input:
        dims = i.type.tensor_type.shape.dim
        for d, v in zip(dims, [1, 3, n, n]):
            d.dim_value = v
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "QLinearConv"):
            w = shapes.get(node.input[1 if node.op_type == "Conv" else 3])
            out = shapes.get(node.output[0])
            if w and out:
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a and b:
                total += int(np.prod(a)) * b[-1]
    return total


def session(path, threads, profile=False, optimized=None):
    """A CPU session on `threads` intra-op threads with every graph optimisation, as benchmarked;
    `profile` turns onnxruntime's profiler on, `optimized` saves the optimised graph there."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = profile
    if optimized:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main():
    bundle, threads = sys.argv[1], int(sys.argv[2])
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    card = json.load(open(f"{bundle}/model.json"))
    n = card["preprocess"]["input_size"]
    backbone = session(f"{bundle}/{card['backbone']}", threads)
    head = session(f"{bundle}/{card['head']}", threads)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 3, n, n)).astype(np.float32)
    name = backbone.get_inputs()[0].name

    def frame():
        g, _ = backbone.run(None, {name: x})
        if card.get("zoom_inference", True):
            l, _ = backbone.run(None, {name: x[:, :, ::-1, :].copy()})
            g = np.concatenate([g, l], axis=1)
        head.run(None, {head.get_inputs()[0].name: g})

    for _ in range(3):
        frame()
    start = time.perf_counter()
    for _ in range(frames):
        frame()
    ms = (time.perf_counter() - start) * 1000 / frames
    m = macs(f"{bundle}/{card['backbone']}", n)
    report = {
        "runtime": f"onnxruntime {ort.__version__}",
        "threads": threads,
        "ms_per_frame": ms,
        "backbone_macs": m,
        "gflops_per_s": None if m is None else 2 * 2 * m / (ms / 1000) / 1e9,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
