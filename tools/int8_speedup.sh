#!/usr/bin/env bash
# int8 against fp32 in tract, the field model, both passes + head (docs/performance.md, "Stop 35").
#
#   tools/int8_speedup.sh THREADS ROUNDS FRAMES [OTHER_PIPELINE_BINARY]
#
# Alternates, ROUNDS times: the fp32 bundle, then the int8 bundle, on the `pipeline` bench (built
# first with `cd shared && cargo bench -p cdnet-shared --features runtime,onnx --bench pipeline
# --no-run`), each run the median of FRAMES frames. With OTHER_PIPELINE_BINARY (a copy of the bench
# built from another commit) the int8 bundle also runs on it, in the same rounds, so two builds
# compare on the same host noise. Prints each round, then the lowest and median runs and the
# speed-ups by the lowest runs, by the medians and as the median of the rounds' paired ratios.
# This host's two-thread times wander by 30 % between runs: take many short rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 3 ]]; then
    echo "usage: $0 THREADS ROUNDS FRAMES [OTHER_PIPELINE_BINARY]" >&2
    exit 2
fi
threads=$1 rounds=$2 frames=$3 other=${4:-}
bench=$(find target/release/deps -maxdepth 1 -name 'pipeline-*' -type f -executable | head -1)
if [[ -z $bench ]]; then
    echo "no pipeline bench in target/release/deps: build it first (see the top of $0)" >&2
    exit 1
fi
if [[ -n $other && ! -x $other ]]; then
    echo "$other is not an executable pipeline bench" >&2
    exit 1
fi
median() { "$@" 2>/dev/null | grep -oE "median [0-9.]+" | cut -d' ' -f2; }
for _ in $(seq "$rounds"); do
    line="$(median "$bench" models/demo-phantom "$threads" "$frames" nnef)"
    line+=" $(median "$bench" models/demo-phantom-int8 "$threads" "$frames" nnef)"
    if [[ -n $other ]]; then
        line+=" $(median "$other" models/demo-phantom-int8 "$threads" "$frames" nnef)"
    fi
    echo "$line"
done | tee /dev/stderr | python3 -c '
import statistics as st, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
fp32 = [r[0] for r in rows]
for col, name in [(1, "int8"), (2, "int8 on the other build")]:
    if len(rows[0]) <= col:
        continue
    int8 = [r[col] for r in rows]
    paired = [f / i for f, i in zip(fp32, int8)]
    print(f"{name}: fp32 lowest {min(fp32):.3f} median {st.median(fp32):.3f} ms, "
          f"int8 lowest {min(int8):.3f} median {st.median(int8):.3f} ms; speed-up "
          f"{min(fp32) / min(int8):.2f} by the lowest, {st.median(fp32) / st.median(int8):.2f} "
          f"by the medians, {st.median(paired):.2f} paired "
          f"({sum(p >= 1.3 for p in paired)} of {len(rows)} rounds >= 1.3)")
'
