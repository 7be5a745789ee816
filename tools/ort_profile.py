"""onnxruntime's per-node time on a bundle's backbone, to set beside tract's `op_profile` bench.

usage: ort_profile.py BUNDLE THREADS [FRAMES]

Runs the backbone FRAMES times with onnxruntime's profiler on (after a warm-up without it) and
prints ms per frame by operator type, by convolution kind (depthwise or not) and for each
convolution in graph order, with the group and strides onnxruntime's optimised graph gives it.
Needs onnxruntime and onnx (requirements-bench.txt).
"""
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnx

from ort_bench import session  # the benchmark's session options, so both time the same thing


def node_kinds(optimized_path):
    kinds = {}
    for node in onnx.load(optimized_path).graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kinds[node.name] = (attrs.get("group", 1), attrs.get("strides"))
    return kinds


def main():
    bundle, threads = sys.argv[1], int(sys.argv[2])
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    card = json.load(open(f"{bundle}/model.json"))
    n = card["preprocess"]["input_size"]
    path = f"{bundle}/{card['backbone']}"
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, n, n)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        warm = session(path, threads, optimized=optimized)
        name = warm.get_inputs()[0].name
        for _ in range(20):
            warm.run(None, {name: x})
        kinds = node_kinds(optimized)
    profiled = session(path, threads, profile=True)
    for _ in range(frames):
        profiled.run(None, {name: x})
    trace = profiled.end_profiling()
    per_node = collections.defaultdict(float)
    for event in json.load(open(trace)):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[(event["args"]["op_name"], event["name"][: -len("_kernel_time")])] += event["dur"]
    os.remove(trace)
    ms = {key: us / frames / 1000 for key, us in per_node.items()}
    print(f"total {sum(ms.values()):.3f} ms per frame ({frames} frames, {threads} threads)")
    by_op, by_conv = collections.defaultdict(float), collections.defaultdict(float)
    for (op, node), t in ms.items():
        by_op[op] += t
        if op == "Conv":
            by_conv["depthwise" if kinds.get(node, (1,))[0] > 1 else "dense"] += t
    for op, t in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"{t:8.3f}  {op}")
    for kind, t in by_conv.items():
        print(f"{t:8.3f}  Conv, {kind}")
    print("convolutions in graph order (ms, group, strides):")
    order = {node: index for index, node in enumerate(kinds)}
    for (op, node), t in sorted(ms.items(), key=lambda kv: order.get(kv[0][1], -1)):
        if op == "Conv":
            group, strides = kinds.get(node, (1, None))
            print(f"{t:8.3f}  group {group:5d}  strides {strides}")


if __name__ == "__main__":
    main()
