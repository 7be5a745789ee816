"""Macro-F1 of a bundle through the board's own path: `cdnet-edge check --image` on every image of
an ImageFolder split (docs/performance.md, int8 accuracy).

usage: edge_f1.py BUNDLE DATA_DIR [SPLIT] [CDNET_EDGE]

Runs the given `cdnet-edge` binary (default target/release/cdnet-edge) once per image, takes the
class it prints, and prints accuracy and macro-F1 over the five classes. A frame the edge refuses
(frame gate) or fails on stops the script with the edge's own message.
"""
import glob
import json
import subprocess
import sys

CLASSES = ["Normal", "IOT", "RD", "PSS", "VH"]


def classify(edge, bundle, image):
    out = subprocess.run([edge, "check", "--model", bundle, "--image", image], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{image}: cdnet-edge exited {out.returncode}: {out.stderr.strip()}")
    verdict = json.loads(out.stdout)
    if "class" not in verdict:
        sys.exit(f"{image}: no class in the edge's answer: {out.stdout.strip()}")
    return verdict["class"]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bundle, data = sys.argv[1], sys.argv[2]
    split = sys.argv[3] if len(sys.argv) > 3 else "test"
    edge = sys.argv[4] if len(sys.argv) > 4 else "target/release/cdnet-edge"
    truth, predicted = [], []
    for label, name in enumerate(CLASSES):
        for image in sorted(glob.glob(f"{data}/{split}/{name}/*.png")):
            truth.append(label)
            predicted.append(classify(edge, bundle, image))
    if not truth:
        sys.exit(f"no PNG images under {data}/{split}/<class>/")
    f1 = []
    for k in range(len(CLASSES)):
        tp = sum(t == k and p == k for t, p in zip(truth, predicted))
        fp = sum(t != k and p == k for t, p in zip(truth, predicted))
        fn = sum(t == k and p != k for t, p in zip(truth, predicted))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    accuracy = sum(t == p for t, p in zip(truth, predicted)) / len(truth)
    print(f"{bundle}: {len(truth)} images, accuracy {accuracy:.4f}, macro-F1 {sum(f1) / len(f1):.4f}")


if __name__ == "__main__":
    main()
