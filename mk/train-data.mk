# Training data and evaluation (issue 11).  Included by the Makefile.
#
#   make fuzz-data [FUZZ_SECONDS=30]   libFuzzer + ASan over the data readers,
#                                      featurization and evaluation reports
#   make golden-eval                   regenerate t/data/eval/goldens.json with
#                                      scikit-learn and seqeval (needs .venv)
#   make golden-data                   regenerate t/data/train/features.json
#                                      with transformers (needs .venv)

DATA_SRCS   := src/aiserve_data.c src/aiserve_eval.c $(TOK_SRCS)
FUZZ_DATA   := $(BUILD)/fuzz/fuzz_data

.PHONY: fuzz-data golden-eval golden-data

$(FUZZ_DATA): t/fuzz/fuzz_data.c $(DATA_SRCS) $(wildcard src/*.h) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) \
	    $(call dep_shell,pkg-config --cflags jansson libutf8proc) \
	    $< $(DATA_SRCS) -o $@ \
	    $(call dep_shell,pkg-config --libs jansson libutf8proc) -lm -lpthread

# Runs from the repository root (the target loads a tokenizer from
# t/data/tokenizers/); seeds: the files of t/data/train/, each with the
# first byte that reads it in its format.
fuzz-data: $(FUZZ_DATA)
	@mkdir -p $(BUILD)/fuzz/corpus-data
	@for f in t/data/train/*.jsonl t/data/train/*.csv t/data/train/*.conll; do \
	    case $$f in *.jsonl) b='\x00';; *.csv) b='\x09';; *) b='\x02';; esac; \
	    { printf "$$b"; cat $$f; } > $(BUILD)/fuzz/corpus-data/seed-$$(basename $$f); \
	done
	$(FUZZ_DATA) -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -print_final_stats=1 $(BUILD)/fuzz/corpus-data

golden-eval:
	$(PYTHON_VENV) tools/gen-eval-goldens.py

golden-data: $(DEFAULT_MODEL)/model.safetensors
	$(PYTHON_VENV) tools/gen-data-goldens.py

# t/unit/test_eval.c runs the command-line tool
$(BUILD)/t/test_eval: $(TOOLDIR)/aiserve-eval
