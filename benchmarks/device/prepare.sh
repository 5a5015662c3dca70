#!/usr/bin/env bash
# Builds .device/ (ignored by git): what a GPU machine without network needs beside the
# repository to run dqnfast. That machine has Python 3.12, torch with CUDA, numba, pybind11,
# cmake, ninja and pytest, and no envpool, hydra or wandb. Run this on a machine with network;
# copy .device/ to the GPU machine with the working tree and start each command there with
#   . benchmarks/device/setup.sh && <your command>
# benchmarks/README.md ("On the GPU machine") lists the measurements. About 15 MiB.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
rm -rf .device && mkdir -p .device/whl
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$1" "${@:2}"
}
dl .device/whl dm-tree==0.1.10 optree==0.20.0 dm-env==1.6 gymnasium==1.4.0 farama-notifications==0.0.6 \
  types-protobuf typing-extensions hydra-core==1.3.8 omegaconf==2.3.0 pyyaml cloudpickle tqdm ale-py==0.12.1
# antlr4 4.9.3 (what omegaconf 2.3 pins) is a pure-Python sdist: build its wheel here.
python3 -m pip wheel -q --no-deps -w .device/whl antlr4-python3-runtime==4.9.3
tmp=$(mktemp -d)
dl "$tmp" envpool==1.2.5 envpool-assets==0.3.0
(cd "$tmp" && for w in *.whl; do python3 -m zipfile -e "$w" x/; done)
src="$tmp/x"
dst=.device/envpool
mkdir -p "$dst/envpool/atari" "$dst/envpool_assets"
cp "$src"/envpool/{__init__,entry,registration}.py "$dst/envpool/"
cp "$src"/envpool/py.typed "$dst/envpool/" 2>/dev/null || true
cp -r "$src"/envpool/python "$dst/envpool/"
cp "$src"/envpool/atari/{__init__.py,registration.py,atari_envpool.so} "$dst/envpool/atari/"
cp -r "$src"/envpool/classic_control "$dst/envpool/"
cp -r "$src"/envpool.libs "$dst/"
cp "$src"/envpool_assets/__init__.py "$dst/envpool_assets/"
cp -r "$src"/envpool_assets/atari "$dst/envpool_assets/"
# Only the Atari and classic-control registrations: the other subpackages load their own .so.
printf '"""Trimmed to the Atari and classic-control registrations."""\nimport envpool.atari.registration  # noqa: F401\nimport envpool.classic_control.registration  # noqa: F401\n' > "$dst/envpool/entry.py"
rm -rf "$tmp"
du -sh .device
