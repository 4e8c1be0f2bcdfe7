# Training engine (issue 11): reference values.  Included by the Makefile.
#
#   make train-fixtures   regenerate t/data/train-*.safetensors with torch,
#                         transformers and peft (needs .venv and MiniLM)

.PHONY: train-fixtures

train-fixtures: $(DEFAULT_MODEL)/model.safetensors
	$(PYTHON) tools/gen-train-fixtures.py
