#!/usr/bin/env bash
# Unattended check of the CUDA paths on one GPU, under ten minutes: training (eager, compiled, compiled + bf16
# autocast, host-memory store), resume, the compiled kernel against eager on the same noise, and the speed table.
#
#   OUT=gpu_out bash benchmarks/gpu_check.sh        # from the repository root, with the package importable
#   DEVICE=cpu STEPS=20 bash benchmarks/gpu_check.sh  # a dry run of every stage on the CPU (no GPU needed)
#
# Everything lands in $OUT: one run folder per training, speed_gpu.md (python -m benchmarks.speed on the GPU) and
# gpu_check.txt (the summary: final W2 / NLL per variant, resume, store and kernel agreement). Each stage has its
# own timeout (590 s together at most), so one that hangs cannot take the rest with it; a failed stage is reported
# and the next one runs. The speed table is written row by row, so a timeout keeps the rows measured so far.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
STEPS=${STEPS:-300}
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then ACCELERATOR=gpu; SPEED_ARGS=(); else ACCELERATOR=cpu; SPEED_ARGS=(--quick --repeats 1); fi
export DEVICE
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.txt"
: >"$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }

if [ "$DEVICE" = cuda ]; then
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { say "no CUDA device: nothing checked"; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/# gpu: /' | tee -a "$REPORT"
else
  say "# dry run on the CPU: every stage, no CUDA path exercised"
fi
python -c "import torch; print('# torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$REPORT"

COMMON=("trainer.accelerator=$ACCELERATOR" trainer.devices=1 "trainer.max_steps=$STEPS" "trainer.val_check_interval=$STEPS"
        logger=csv callbacks.model_checkpoint.every_n_train_steps=100)
train() {  # train NAME SECONDS OVERRIDES...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  if timeout "$limit" python train.py "${COMMON[@]}" "hydra.run.dir=$OUT/$name" "$@" >"$OUT/$name.log" 2>&1; then
    say "train $name: ok in $((SECONDS - start)) s"
    grep -h "lvebm: torch.compile" "$OUT/$name.log" | head -1 | sed 's/^/  FELL BACK TO EAGER: /' | tee -a "$REPORT"
  else
    say "train $name: FAILED (exit $?, see $name.log)"; tail -5 "$OUT/$name.log" | tee -a "$REPORT"
  fi
}

train eager 80 sampler.compile=false
train compiled 80 sampler.compile=true
train compiled_bf16 80 sampler.compile=true sampler.autocast=true
train host_store 80 sampler.compile=false sampler.posterior.store_device=cpu
train resumed 60 sampler.compile=false "ckpt_path=$OUT/eager/checkpoints/last.ckpt" "trainer.max_steps=$((STEPS + 100))" \
  "trainer.val_check_interval=$((STEPS + 100))"

OUT="$OUT" timeout 30 python - <<'EOF' 2>&1 | tee -a "$REPORT"
import json, os, torch
out = os.environ["OUT"]
def summary(name):
    path = os.path.join(out, name, "summary.json")
    return json.load(open(path)) if os.path.exists(path) else {}
for name in ("eager", "compiled", "compiled_bf16", "host_store", "resumed"):
    s = summary(name)
    print(f"{name:>14}: step {s.get('step')}  W2 {s.get('final/w2')}  floor {s.get('final/w2_floor')}  NLL {s.get('final/nll')}")
def particles(name):
    path = os.path.join(out, name, "checkpoints", "last.ckpt")
    return torch.load(path, weights_only=True)["lvebm"]["particles"] if os.path.exists(path) else None
a, b = particles("eager"), particles("host_store")
if a is not None and b is not None:
    print(f"host store vs device store, final particles: max |diff| = {float((a - b).abs().max()):.3g} (0 expected)")
EOF

timeout 60 python - <<'EOF' 2>&1 | tee -a "$REPORT"
import os, warnings, torch
from lvebm_lightning.energies import MLPEnergy, on_pairs
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.training.sampling import cached_weights
warnings.filterwarnings("error", message="lvebm: torch.compile")  # a fallback to eager fails the check
torch.manual_seed(0)
device = os.environ["DEVICE"]
for sn in (False, True):
    net = MLPEnergy(2, 1, spectral_norm=sn).to(device)
    y0 = torch.randn(4096, 3, device=device)
    for kernel in ("ula", "mala"):
        runs = {}
        for compiled in (False, True):
            config = LangevinConfig(0.01, 50, kernel=kernel, compile=compiled)
            with cached_weights(net):  # as training runs it: cached only with spectral norm
                runs[compiled] = langevin(on_pairs(net, 2), y0, config, torch.Generator(device).manual_seed(1))
        diff = float((runs[True][0] - runs[False][0]).abs().max())
        print(f"kernel {kernel} spectral_norm={sn}: compiled vs eager max |diff| {diff:.3g}, "
              f"acceptance {float(runs[False][1]):.4f} vs {float(runs[True][1]):.4f}")
EOF

timeout 120 python -m benchmarks.speed --device "$DEVICE" "${SPEED_ARGS[@]}" --out "$OUT/speed_gpu.md" >"$OUT/speed_gpu.log" 2>&1 \
  && say "speed table: $OUT/speed_gpu.md" || say "speed: FAILED or timed out (see speed_gpu.log)"
cat "$OUT/speed_gpu.md" 2>/dev/null | tee -a "$REPORT"
