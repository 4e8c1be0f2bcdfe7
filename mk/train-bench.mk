# Training speed (issue 11): aiserve's training engine against PyTorch on
# Banking77, in the same run.  Not part of `make all`.
#
#   make bench-train [BENCH_THREADS=2] [BENCH_TRAIN_ROUNDS=3] [BENCH_STEPS=20]
#                    [BENCH_TRAIN_WRITE=BENCHMARKS.md]
#
# full and lora: tokens/s of whole training steps (forward, backward,
# AdamW) on batches of 32 Banking77 sequences, aiserve packed, PyTorch
# padded to the batch's longest (DataCollatorWithPadding), and peft LoRA;
# full-bf16: full in bf16 mixed precision against PyTorch under
# torch.autocast("cpu", dtype=torch.bfloat16), goal >= 2x our fp32 full;
# head: Banking77 trained end to end in head mode (features included),
# aiserve against PyTorch doing the same.  Peak RSS of each side.

PYTHON             ?= .venv/bin/python
BENCH_THREADS      ?= 2
BENCH_ENV          ?= -u OPENBLAS_CORETYPE
BENCH_TRAIN_ROUNDS ?= 3
BENCH_STEPS        ?= 20
BENCH_TRAIN_WRITE  ?=
BANKING77          ?= ../shared/data/banking77

.PHONY: bench-train

$(BUILD)/bench-train-engine: tools/bench-train-engine.c tools/bench.h $(ENGINE_LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)

bench-train: $(BUILD)/bench-train-engine $(DEFAULT_MODEL)/model.safetensors
	env $(BENCH_ENV) $(PYTHON) tools/bench-train --threads $(BENCH_THREADS) \
	    --rounds $(BENCH_TRAIN_ROUNDS) --steps $(BENCH_STEPS) --data $(BANKING77) \
	    $(if $(BENCH_TRAIN_WRITE),--write $(BENCH_TRAIN_WRITE))
