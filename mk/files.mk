# The Files API's references (src/aiserve_files.c, t/065-files.t):
#
#   make golden-files   regenerate t/data/files/ (the banking77 slice and
#                       the token counts) with transformers (needs .venv)

.PHONY: golden-files

golden-files: $(DEFAULT_MODEL)/model.safetensors
	$(PYTHON_VENV) tools/gen-files-goldens.py
