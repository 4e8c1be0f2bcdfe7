# Model output (src/aiserve_st_write.h, src/aiserve_hf_write.h):
#   make st-write-fixtures   t/data/st-write/reference.safetensors, written
#                            by the safetensors package (needs .venv)
#   make check-hf-export     directories written by tools/aiserve-export
#                            loaded by transformers, sentence-transformers
#                            and peft, compared with aiserve (needs .venv)

.PHONY: st-write-fixtures check-hf-export

PYTHON       ?= .venv/bin/python

st-write-fixtures:
	$(PYTHON) tools/gen-st-write-fixtures.py

check-hf-export: tools/aiserve-export tools/aiserve-embed
	$(PYTHON) tools/check-hf-export.py
