# Encoder (issue 3): fuzzing, golden values, benchmarks.
#
#   make fuzz-safetensors [FUZZ_SECONDS=30]   libFuzzer on the header parser
#   make encoder-fixtures                     regenerate t/data/encoder-*.jsonl
#                                             and models/tiny-* (needs .venv)
#   make bf16-fixtures                        regenerate
#                                             t/data/encoder-bf16-minilm.jsonl
#   make bench-gemm                           sgemm GFLOP/s on BERT shapes
#   make bench-train-gemm                     training products: OpenBLAS, oneDNN
#   make bench-attention                      one head, fp32 vs bf16 kernel
#   make bench-encoder                        engine vs PyTorch vs ONNX Runtime

FUZZ_DIR     := $(BUILD)/fuzz
PYTHON       ?= .venv/bin/python

.PHONY: fuzz-safetensors encoder-fixtures bf16-fixtures bench-gemm \
        bench-train-gemm bench-attention \
        bench-encoder

$(FUZZ_DIR)/fuzz_safetensors: t/fuzz/fuzz_safetensors.c \
        src/aiserve_safetensors.c src/aiserve_safetensors.h | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) \
	    t/fuzz/fuzz_safetensors.c src/aiserve_safetensors.c -o $@ \
	    $(call dep_shell,pkg-config --libs jansson)

fuzz-safetensors: $(FUZZ_DIR)/fuzz_safetensors
	@mkdir -p $(FUZZ_DIR)/corpus-safetensors
	$< -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -dict=t/fuzz/safetensors.dict \
	    $(FUZZ_DIR)/corpus-safetensors t/fuzz/seeds-safetensors

encoder-fixtures: $(DEFAULT_MODEL)/model.safetensors
	$(PYTHON) tools/gen-encoder-fixtures.py minilm tiny

bf16-fixtures: $(DEFAULT_MODEL)/model.safetensors
	$(PYTHON) tools/gen-bf16-fixtures.py

# Benchmark tools, not part of `make all`.
tools/bench-gemm: tools/bench-gemm.c $(ENGINE_LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS) -ldl

# OpenBLAS chooses its kernels for the CPU unless OPENBLAS_CORETYPE is set;
# a development shell here sets it to Haswell (AVX2), so the benchmarks run
# without it by default, as nginx started from systemd would.  Override with
# e.g. BENCH_ENV=OPENBLAS_CORETYPE=Haswell.
BENCH_THREADS ?= 2
BENCH_ENV     ?= -u OPENBLAS_CORETYPE
bench-gemm: tools/bench-gemm
	env $(BENCH_ENV) tools/bench-gemm --threads 1
	env $(BENCH_ENV) tools/bench-gemm --threads $(BENCH_THREADS)

# The training engine's products, OpenBLAS against oneDNN, shape by shape.
tools/bench-train-gemm: tools/bench-train-gemm.c tools/bench.h $(ENGINE_LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)

bench-train-gemm: tools/bench-train-gemm
	env $(BENCH_ENV) tools/bench-train-gemm

# The attention kernels, fp32 against bf16, one thread.
$(BUILD)/bench-attention: tools/bench-attention.c tools/bench.h $(ENGINE_LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)

bench-attention: $(BUILD)/bench-attention
	$(BUILD)/bench-attention

$(BUILD)/bench-encoder-engine: tools/bench-encoder-engine.c tools/bench.h $(ENGINE_LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)

BENCH_SECONDS ?= 5
BENCH_ROUNDS  ?= 5
bench-encoder: $(BUILD)/bench-encoder-engine tools/bench-gemm \
        $(DEFAULT_MODEL)/model.safetensors
	env $(BENCH_ENV) $(PYTHON) tools/bench-encoder --threads $(BENCH_THREADS) \
	    --seconds $(BENCH_SECONDS) --rounds $(BENCH_ROUNDS) \
	    --write BENCHMARKS.md
