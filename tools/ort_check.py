"""Runs a CDNet bundle with onnxruntime, the second runtime the export is checked against.

usage: ort_check.py BUNDLE CASES.json OUT.json

CASES.json: {"n": N, "cases": [{"global": [N*N floats], "zoom": [N*N floats] or null}, ...]}
  "global" is the normalised network input plane; "zoom" the centre-zoom view the Rust pipeline
  cut from it (the crop runs in the shared crate, not in the graph).
OUT.json:   {"cases": [{"probabilities": [...], "heatmap": [...], "heatmap_side": S}, ...]}
  "heatmap" is the backbone graph's second output (the stride-16 heatmap; AttS in older bundles).
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    bundle, cases_path, out_path = sys.argv[1:4]
    card = json.load(open(f"{bundle}/model.json"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    backbone = ort.InferenceSession(f"{bundle}/{card['backbone']}", options, providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(f"{bundle}/{card['head']}", options, providers=["CPUExecutionProvider"])
    spec = json.load(open(cases_path))
    n = spec["n"]

    def backbone_pass(plane):
        x = np.asarray(plane, dtype=np.float32).reshape(1, 1, n, n).repeat(3, axis=1)
        feature, heatmap = backbone.run(None, {backbone.get_inputs()[0].name: x})
        return feature.reshape(-1), heatmap.reshape(-1)

    out = []
    for case in spec["cases"]:
        feature, heatmap = backbone_pass(case["global"])
        if case.get("zoom") is not None:
            local, _ = backbone_pass(case["zoom"])
            feature = np.concatenate([feature, local])
        (probabilities,) = head.run(None, {head.get_inputs()[0].name: feature.reshape(1, -1)})
        out.append(
            {
                "probabilities": probabilities.reshape(-1).tolist(),
                "heatmap": heatmap.tolist(),
                "heatmap_side": int(round(len(heatmap) ** 0.5)),
            }
        )
    json.dump({"runtime": f"onnxruntime {ort.__version__}", "cases": out}, open(out_path, "w"))


if __name__ == "__main__":
    main()
