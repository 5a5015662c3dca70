#!/usr/bin/env bash
# The GPU machine's measurements, in calls that each fit its 10-minute command limit.
# On the GPU machine (repo root, with the .device/ that `bash benchmarks/device/prepare.sh`
# builds on a machine with network copied beside it):
#
#   . benchmarks/device/setup.sh && bash benchmarks/device/run.sh fps     # ~8 min
#   . benchmarks/device/setup.sh && bash benchmarks/device/run.sh pong    # ~5 min
#
#   fps   every fps.py stage with its bound (env, actor, replay, learner variants, e2e
#         nature + fast, peer) -> $OUT/fps.json, $OUT/fps.log
#   pong  python -m dqnfast.train on Pong at the Nature ratio (defaults: 8 envs, B=32,
#         CUDA graphs), stopped by SIGINT after $PONG_SECONDS (default 270) -> $OUT/metrics.csv,
#         $OUT/train.log; 10M agent steps extrapolate from the steady SPS after learning starts
#         (`bash benchmarks/device/run.sh extrapolate <metrics.csv>` on any machine)
#   split if a call nears the limit: `run.sh fps-a` (env, actor, replay) and `run.sh fps-b`
#         (learner, e2e, peer)
set -uo pipefail
out=${OUT:-/tmp/dqnfast-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
case "${1:-fps}" in
  fps) python benchmarks/fps.py --out "$out/fps.json" 2>&1 | tee "$out/fps.log" ;;
  fps-a) python benchmarks/fps.py --stage env,actor,replay --out "$out/fps_a.json" 2>&1 | tee "$out/fps_a.log" ;;
  fps-b) python benchmarks/fps.py --stage learner,e2e,peer --out "$out/fps_b.json" 2>&1 | tee "$out/fps_b.log" ;;
  pong)
    run=/tmp/dqnfast-pong
    rm -rf "$run"
    timeout -s INT "${PONG_SECONDS:-270}" python -m dqnfast.train game=Pong envs.eval.episodes=0 \
      logger.progress=false logger.log_every=20000 logger.checkpoint_every=0 hydra.run.dir="$run" "${@:2}"
    cp "$run/metrics.csv" "$run/train.log" "$out/" 2>/dev/null
    bash "$0" extrapolate "$run/metrics.csv"
    ;;
  extrapolate)
    python - "${2:?metrics.csv}" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("updates") not in (None, "", "0")]
if len(rows) < 3:
    sys.exit("not enough rows after learning started")
a, b = rows[1], rows[-1]  # skip the first learning row: it holds the compile
steps, secs = float(b["env_steps"]) - float(a["env_steps"]), float(b["time"]) - float(a["time"])
sps = steps / secs
print(f"steady SPS after learning starts: {sps:,.0f} agent steps/s over {secs:.0f} s "
      f"({steps:,.0f} steps, {float(b['updates']) - float(a['updates']):,.0f} updates)")
print(f"10M agent steps (40M frames) extrapolated: {1e7 / sps / 60:.1f} minutes")
EOF
    ;;
  *) echo "usage: run.sh fps|fps-a|fps-b|pong|extrapolate <metrics.csv>" >&2; exit 2 ;;
esac
