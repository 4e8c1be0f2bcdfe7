# Tokenizer targets (issue 2).  Included by the Makefile.
#
#   make fuzz-tokenizer [FUZZ_SECONDS=30]   libFuzzer + ASan over the tokenizer
#   make golden-tokenizer                   regenerate Unicode table + goldens
#                                           (needs .venv with tokenizers)
#   make bench-tokenizer                    ours vs HF tokenizers, updates
#                                           BENCHMARKS.md (needs .venv)
#   make difftest-tokenizer [SEED=1]        random texts, ours vs HF tokenizers
#                                           (needs .venv)

TOK_SRCS       := src/aiserve_tokenizer.c src/aiserve_tok_encode.c src/aiserve_tok_unicode.c \
                  src/aiserve_tok_decode.c src/aiserve_pipeline.c \
                  src/aiserve_err.c
FUZZ_TOKENIZER := $(BUILD)/fuzz/fuzz_tokenizer
PYTHON_VENV    ?= .venv/bin/python

.PHONY: fuzz-tokenizer golden-tokenizer bench-tokenizer difftest-tokenizer

# the test programs include this helper too; test_tokenizer also runs the
# command-line tool
$(BUILD)/t/test_tokenizer $(BUILD)/t/test_tokenizer_parity: t/unit/tok_golden.h
$(BUILD)/t/test_tokenizer: $(TOOLDIR)/aiserve-tokenize

$(FUZZ_TOKENIZER): t/fuzz/fuzz_tokenizer.c t/unit/tok_golden.h $(TOK_SRCS) $(wildcard src/*.h) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@) $(BUILD)/fuzz/corpus-tokenizer
	$(FUZZ_CC) $(FUZZ_CFLAGS) -It/unit $(call dep_shell,pkg-config --cflags jansson libutf8proc) \
	    $< $(TOK_SRCS) -o $@ $(call dep_shell,pkg-config --libs jansson libutf8proc) -lpthread

# Runs from the repository root (the target loads t/data/tokenizers/ and,
# when present, models/all-MiniLM-L6-v2); seeds from the parity corpus.
fuzz-tokenizer: $(FUZZ_TOKENIZER)
	@if [ ! -e $(BUILD)/fuzz/corpus-tokenizer/.seeded ]; then \
	    gzip -dc t/data/tokenizer/corpus.jsonl.gz | head -300 | \
	    awk '{ f = sprintf("$(BUILD)/fuzz/corpus-tokenizer/seed%04d", NR); \
	           printf "%c%c%s", (NR % 32) + 64, NR % 40, $$0 > f; close(f) }'; \
	    touch $(BUILD)/fuzz/corpus-tokenizer/.seeded; fi
	$(FUZZ_TOKENIZER) -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -print_final_stats=1 $(BUILD)/fuzz/corpus-tokenizer

golden-tokenizer:
	$(PYTHON_VENV) tools/gen-tok-unicode.py
	$(PYTHON_VENV) tools/gen-tokenizer-goldens.py

TOK_BENCH      := $(BUILD)/bench-tokenizer-c

$(TOK_BENCH): tools/bench-tokenizer-c.c $(ENGINE_LIB)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)

bench-tokenizer: $(TOK_BENCH)
	$(PYTHON_VENV) tools/bench-tokenizer

# Random differential test against HF tokenizers (needs .venv and models/).
SEED ?= 1
difftest-tokenizer: tools/aiserve-tokenize
	$(PYTHON_VENV) tools/difftest-tokenizer --seed $(SEED)
