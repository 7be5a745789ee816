#!/usr/bin/env bash
# tract against onnxruntime, fp32 and int8, one and two threads, in one run (issue 16's table;
# docs/performance.md, "Stop 35").
#
#   tools/side_by_side.sh PYTHON ROUNDS FRAMES [FP32_BUNDLE INT8_BUNDLE [OTHER_PIPELINE_BINARY]]
#
# PYTHON has onnxruntime (`.venv-ci/bin/python` after `.ci/run`, or a venv from
# tools/requirements-bench.txt). The bundles default to the field model's; the `pipeline` bench is
# built first (`cd shared && cargo bench -p cdnet-shared --features runtime,onnx --bench pipeline
# --no-run`). Each round runs, per thread count: tract on both bundles (and on
# OTHER_PIPELINE_BINARY, a bench built from another commit, if given), then onnxruntime on both
# (its int8 on half the frames: it is slow). One line per run: round, threads, bundle, runtime,
# median ms a frame (tract adds peak RSS in MiB and the answer digest).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 3 ]]; then
    echo "usage: $0 PYTHON ROUNDS FRAMES [FP32_BUNDLE INT8_BUNDLE [OTHER_PIPELINE_BINARY]]" >&2
    exit 2
fi
python=$1 rounds=$2 frames=$3
fp32=${4:-models/demo-phantom} int8=${5:-models/demo-phantom-int8} other=${6:-}
bench=$(find target/release/deps -maxdepth 1 -name 'pipeline-*' -type f -executable | head -1)
if [[ -z $bench ]]; then
    echo "no pipeline bench in target/release/deps: build it first (see the top of $0)" >&2
    exit 1
fi
"$python" -c "import onnxruntime" || {
    echo "$python cannot import onnxruntime: give a python that has it" >&2
    exit 1
}
tract() {
    "$1" "$2" "$3" "$frames" nnef 2>&1 | grep -oE "median [0-9.]+|RSS [0-9]+|digest [0-9a-f]+" |
        cut -d' ' -f2 | tr '\n' ' '
}
ort() {
    "$python" tools/ort_bench.py "$1" "$2" "$3" 2>&1 | tail -1 |
        python3 -c "import json, sys; print(round(json.load(sys.stdin)['ms_per_frame'], 2))"
}
for round in $(seq "$rounds"); do
    for threads in 1 2; do
        for bundle in "$fp32" "$int8"; do
            echo "r$round t=$threads $bundle tract $(tract "$bench" "$bundle" "$threads")"
            if [[ -n $other ]]; then
                echo "r$round t=$threads $bundle tract-other $(tract "$other" "$bundle" "$threads")"
            fi
        done
        echo "r$round t=$threads $fp32 onnxruntime $(ort "$fp32" "$threads" "$frames")"
        echo "r$round t=$threads $int8 onnxruntime $(ort "$int8" "$threads" $((frames / 2)))"
    done
done
