#!/usr/bin/env bash
# The short check to run when a GPU machine is at hand (a few minutes): bf16 LoRA, QLoRA NF4, and 2-process
# DDP when there are two devices, each a few steps of `datagen train` on the embedded SmolLM2-135M, printing
# tokens/s and peak GPU memory. Exits 0 with a message on a machine without CUDA.
#   scripts/gpu_check.sh                 # from the repository root, with datagen installed (or PYTHONPATH=.)
#   STEPS=30 scripts/gpu_check.sh        # longer runs for steadier figures
set -euo pipefail
PYTHON="${PYTHON:-python}"
STEPS="${STEPS:-10}"
OUT="${OUT:-$(mktemp -d -t datagen-gpu-check.XXXXXX)}"

devices=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$devices" = "0" ]; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check"
  exit 0
fi
"$PYTHON" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "| torch", torch.__version__)'

# Toy data: 64 short instruction/answer pairs, written here so the check needs nothing else.
"$PYTHON" - "$OUT/data.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(64):
        f.write(json.dumps({"instruction": f"Give fact number {i} about the number {i * 7}.", "input": "",
                            "output": f"{i * 7} is {'even' if i * 7 % 2 == 0 else 'odd'}, and {i * 7} + 1 = {i * 7 + 1}."}) + "\n")
PY

COMMON=(max_steps="$STEPS" per_device_train_batch_size=8 eval_fraction=0.1 save_steps=100000 logging_steps=1)

report() {  # name, out folder: tokens/s and peak memory from train_summary.json (peak_gpu_mb per rank 0)
  "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[2] + "/train_summary.json"))
print(f"gpu_check {sys.argv[1]:>10}: {s['tokens_per_second']} tokens/s, peak GPU memory {s.get('peak_gpu_mb')} MB "
      f"(rank 0), eval loss {s['eval_loss_before']:.4f} -> {s['eval_loss_after']:.4f}, {s['world_size']} process(es)")
PY
}

"$PYTHON" -m datagen -q train --data "$OUT/data.jsonl" --out "$OUT/bf16-lora" "${COMMON[@]}" dtype=bfloat16
report "bf16 LoRA" "$OUT/bf16-lora"

if "$PYTHON" -c 'import bitsandbytes' 2>/dev/null; then
  "$PYTHON" -m datagen -q train --data "$OUT/data.jsonl" --out "$OUT/qlora" "${COMMON[@]}" load_in_4bit=true \
    bnb_4bit_quant_type=nf4
  report "QLoRA NF4" "$OUT/qlora"
else
  echo "gpu_check: bitsandbytes not installed; QLoRA skipped (pip install bitsandbytes)"
fi

if [ "$devices" -ge 2 ]; then
  "$PYTHON" -c "
import json; from datagen.train.config import load_train_config
print(json.dumps(load_train_config(None, ['max_steps=$STEPS', 'per_device_train_batch_size=4', 'eval_fraction=0.1',
      'save_steps=100000', 'dtype=bfloat16']).to_dict()))" > "$OUT/ddp.json"
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 -m datagen.train.launch \
    "$OUT/data.jsonl" "$OUT/ddp" "$OUT/ddp.json" 0
  report "DDP x2" "$OUT/ddp"
else
  echo "gpu_check: one device; 2-process DDP skipped"
fi
echo "gpu_check: outputs in $OUT"
