#!/usr/bin/env bash
# On the GPU machine (repo root, .device/ copied beside it): installs its wheels into
# /tmp/site, builds dqnfast in place, and checks that envpool and dqnfast import. Source it
# (". benchmarks/device/setup.sh") so PYTHONPATH stays set for the command that follows.
set -e
pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl
export PYTHONPATH=$PWD/.device/envpool:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
pip install -q --no-build-isolation --no-deps -e .
python3 -c "import envpool, dqnfast.replay, torch; print('device ok:', torch.cuda.get_device_name(0))"
