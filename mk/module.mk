# The nginx module (issue 4).  Included by the Makefile.
#
#   make test-module                 the module's suites t/0[1-4]*.t and
#                                    t/06*.t, normal and HUP mode
#   make pipeline-fixtures           regenerate t/data/pipeline-fixtures.json
#                                    (needs .venv)
#   make routes-fixtures             regenerate t/data/routes-fixtures.json
#                                    (needs .venv)
#   make bench-http [BENCH_HTTP_ARGS=]  tools/bench-http: wrk against the
#                                    module vs the encoder alone
#
# config picks up src/ngx_http_aiserve_*.c and src/aiserve_*.c by glob when
# nginx's configure runs, so configure runs again when that set of files
# changes (a new engine or module file), not on every edit.

PYTHON           ?= .venv/bin/python
MODULE_SRC_SET   := $(sort $(wildcard src/ngx_http_aiserve*.[ch] \
                                      src/aiserve_*.[ch]))

.PHONY: test-module pipeline-fixtures routes-fixtures bench-http \
        aiserve-module-srcs

$(BUILD)/.module-srcs: aiserve-module-srcs
	@mkdir -p $(BUILD)
	@echo '$(MODULE_SRC_SET)' | cmp -s - $@ 2>/dev/null \
	    || echo '$(MODULE_SRC_SET)' > $@

$(BUILD)/Makefile: $(BUILD)/.module-srcs

test-module: module $(DEFAULT_MODEL)/model.safetensors
	prove -I t/lib t/0[1-4]*.t t/06*.t
	TEST_NGINX_USE_HUP=1 prove -I t/lib t/0[1-4]*.t t/06*.t

pipeline-fixtures:
	$(PYTHON) tools/gen-pipeline-fixtures.py

routes-fixtures:
	$(PYTHON) tools/gen-routes-fixtures.py

bench-http: module tools $(DEFAULT_MODEL)/model.safetensors
	tools/bench-http $(BENCH_HTTP_ARGS)
