# aiserve: build, run and test.  The two commands a user needs are
#   make run    serve the default model on 127.0.0.1:8080 (PORT=8081: another port)
#   make test   build everything and run the unit and integration suites
# Component-specific targets (fuzzers, golden generators, benchmarks) live in
# mk/*.mk, included at the end.

SHELL        := /bin/bash
ROOT         := $(CURDIR)
BUILD        := build
NGINX        ?= /usr/sbin/nginx
NGX_SRC      ?= /usr/share/nginx/src

# Nothing below asks the system for a flag or a path when this file is read:
# on a bare machine `make run` or `make test` is the first command, and the
# libraries, pkg-config and dpkg-architecture only exist once tools/deps.sh
# has run (the $(BUILD)/.deps-ok step of that same make).  So the flags are
# recursively expanded variables (=, never :=) used only in recipes: make
# expands a recipe just before it runs it, after its prerequisites, and every
# rule that compiles or links waits for $(BUILD)/.deps-ok (the engine's
# objects, the fuzzers and nginx's configure step order-only; everything else
# through them).  dep_shell runs its command then, and stops make with a
# message when it fails instead of building with empty flags.  (A := here
# gave empty flags on a fresh machine: the first `make test` failed to link.)
dep_shell       = $(call dep_shell_check,$(shell $(1) 2>/dev/null && echo ok),$(1))
dep_shell_check = $(if $(filter ok,$(lastword $(1))),$(filter-out ok,$(1)),$(error \
                  aiserve: "$(2)" failed: run "make deps" (tools/deps.sh) to \
                  install what the build needs))

MULTIARCH     = $(call dep_shell,dpkg-architecture -qDEB_HOST_MULTIARCH)

# oneDNN (libdnnl-dev) for the projections, on weights packed at load, one
# OpenMP thread in every calling thread (src/aiserve_gemm.h); chosen by
# measurement on BERT shapes (BENCHMARKS.md "BLAS", tools/bench-gemm.c).
# OpenBLAS, pthread flavour, run with one thread per call: the engine runs
# its own thread team; the serial flavour is not safe to call from several
# threads at once (src/aiserve_blas.c).  Chosen by measurement on BERT
# shapes (BENCHMARKS.md, tools/bench-gemm.c).
BLAS_INC      = -I/usr/include/$(MULTIARCH)/openblas-pthread
BLAS_LIBDIR   = /usr/lib/$(MULTIARCH)/openblas-pthread
DEP_PKGS     := jansson libutf8proc lmdb libcrypto
DEP_CFLAGS    = $(call dep_shell,pkg-config --cflags $(DEP_PKGS)) $(BLAS_INC)
DEP_LIBS      = $(call dep_shell,pkg-config --libs $(DEP_PKGS)) \
                -ldnnl -lgomp \
                -L$(BLAS_LIBDIR) -Wl,-rpath,$(BLAS_LIBDIR) -lopenblas -lm -lpthread

CC           ?= cc
CFLAGS       ?= -O2 -g
WARN         := -Wall -Wextra -Wno-unused-parameter -Wpointer-arith -Werror
ALL_CFLAGS    = $(CFLAGS) $(WARN) -std=gnu11 -fPIC -pthread -D_GNU_SOURCE \
                -Isrc $(DEP_CFLAGS)

# The nginx-free engine: every src/aiserve_*.c.  The module and the tools
# link the same code.
ENGINE_SRCS  := $(sort $(wildcard src/aiserve_*.c))
ENGINE_OBJS  := $(patsubst src/%.c,$(BUILD)/engine/%.o,$(ENGINE_SRCS))
ENGINE_LIB   := $(BUILD)/libaiserve.a
MODULE_SRCS  := $(sort $(wildcard src/ngx_http_aiserve_*.c src/ngx_http_aiserve_*.h))

# Tools for people: tools/NAME.c becomes $(TOOLDIR)/NAME, tools/NAME in
# the default build (another build directory keeps its own: mk/hardening.mk).
TOOLDIR      ?= tools
TOOL_SRCS    := $(sort $(wildcard tools/aiserve-*.c))
TOOLS        := $(patsubst tools/%.c,$(TOOLDIR)/%,$(TOOL_SRCS))

# Unit tests: t/unit/test_*.c, each a TAP producer run by prove.
UNIT_SRCS    := $(sort $(wildcard t/unit/test_*.c))
UNIT_TESTS   := $(patsubst t/unit/%.c,$(BUILD)/t/%,$(UNIT_SRCS))
# helpers of the Test::Nginx suites, built with the unit tests
UNIT_HELPERS := $(BUILD)/t/ledger_charge

MODULE_SO    := $(BUILD)/ngx_http_aiserve_module.so
DEFAULT_MODEL := models/all-MiniLM-L6-v2

.PHONY: all deps module tools unit-tests test test-unit test-fuzz test-nginx run \
        test-fresh clean
.DEFAULT_GOAL := all

all: module tools unit-tests

# --- dependencies -----------------------------------------------------------
# Installs the Debian packages (when missing) and the default model.
deps: $(BUILD)/.deps-ok $(DEFAULT_MODEL)/model.safetensors

$(BUILD)/.deps-ok: tools/deps.sh
	tools/deps.sh
	@mkdir -p $(BUILD) && touch $@

# Fetched once: only a missing model is downloaded (order-only on the
# script, so editing it does not replace a model nginx may be serving).
$(DEFAULT_MODEL)/model.safetensors: | tools/fetch-model.sh $(BUILD)/.deps-ok
	tools/fetch-model.sh $(DEFAULT_MODEL)

# --- engine and tools -------------------------------------------------------
$(BUILD)/engine/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(ENGINE_LIB): $(ENGINE_OBJS)
	@rm -f $@
	ar rcs $@ $^

tools: $(TOOLS)

$(TOOLDIR)/aiserve-%: tools/aiserve-%.c $(ENGINE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)

# Preloaded into nginx by t/063-worker-exit.t: widens a race of the
# worker's exit (t/shim/exit_delay.c says how).
EXIT_DELAY   := $(BUILD)/t/exit_delay.so

# Preloaded into nginx by make test-asan after the sanitizer runtimes:
# UBSan's reports to UBSAN_OPTIONS's log_path (t/shim/ubsan_log_path.c).
UBSAN_LOG_PATH := $(BUILD)/t/ubsan_log_path.so

unit-tests: $(UNIT_TESTS) $(UNIT_HELPERS) $(EXIT_DELAY) $(UBSAN_LOG_PATH)

$(EXIT_DELAY) $(UBSAN_LOG_PATH): $(BUILD)/t/%.so: t/shim/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared -fPIC $< -o $@ -ldl

$(BUILD)/t/%: t/unit/%.c t/unit/tap.h $(ENGINE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -It/unit $< -o $@ $(ENGINE_LIB) $(DEP_LIBS)

# --- the nginx module, built against Debian's packaged nginx ---------------
# Recipe from shared/DESIGN.md: nginx-dev ships the configure tree and the
# exact flags of /usr/sbin/nginx, so the .so loads into the packaged binary.
module: $(MODULE_SO)

# NGX_CC_OPT, NGX_LD_OPT: extra compiler and linker flags for the module,
# given to configure as --with-cc-opt and --with-ld-opt (make test-asan).
NGX_CC_OPT   ?=
NGX_LD_OPT   ?=

# configure lists the sources it compiles: it runs again when a source
# file is added or removed (the list in $(SRC_LIST) changes).
SRC_LIST     := $(BUILD)/src-list
$(shell mkdir -p $(BUILD) && echo '$(ENGINE_SRCS) $(MODULE_SRCS)' >$(SRC_LIST).new \
    && { cmp -s $(SRC_LIST).new $(SRC_LIST) || mv $(SRC_LIST).new $(SRC_LIST); })

$(BUILD)/Makefile: config $(SRC_LIST) | $(BUILD)/.deps-ok
	cd $(NGX_SRC) && . ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    $(if $(NGX_CC_OPT),--with-cc-opt="$(NGX_CC_OPT)") \
	    $(if $(NGX_LD_OPT),--with-ld-opt="$(NGX_LD_OPT)") \
	    --add-dynamic-module=$(ROOT) --builddir=$(ROOT)/$(BUILD) >$(ROOT)/$(BUILD)/configure.log 2>&1 \
	    || { tail -20 $(ROOT)/$(BUILD)/configure.log; exit 1; }

# nginx's Makefile sets its own CFLAGS (configure's, with -D_GNU_SOURCE and
# the engine's -O2): a CFLAGS given to this make (make test-asan, make
# test-clang) must not override it there, or the engine's sources lose
# -D_GNU_SOURCE (implicit declarations of mkostemp, qsort_r).
$(MODULE_SO): MAKEOVERRIDES =
$(MODULE_SO): $(BUILD)/Makefile $(MODULE_SRCS) $(ENGINE_SRCS) $(wildcard src/*.h)
	$(MAKE) -f $(ROOT)/$(BUILD)/Makefile -C $(NGX_SRC) modules

# --- run and test -----------------------------------------------------------
# PORT: the port `make run` listens on (127.0.0.1), also taken from the
# environment.
PORT ?= 8080

run: deps all
	PORT=$(PORT) tools/run.sh

# CI_FUZZ_SECONDS: how long each libFuzzer target runs inside `make test`
# (bounded, so CI stays within its time; run the fuzz-* targets for longer).
CI_FUZZ_SECONDS ?= 20

# Every libFuzzer target is built with the same flags, from here: ASan and
# UBSan, and UBSan stops at its first report (-fno-sanitize-recover), so a
# UBSan finding leaves a crash-* reproducer like any other.  FUZZ_CFLAGS is
# expanded only in recipes (after make deps).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS   = -g -O1 -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -std=gnu11 -D_GNU_SOURCE -Isrc

# Where nvcc is found, the GPU backend is built and its build gates run
# (kernels/kernels.mk); nothing runs on a device.
test: deps all
	$(MAKE) --no-print-directory test-unit test-fuzz $(if $(NVCC),gpu) test-nginx

test-fuzz:
	$(MAKE) --no-print-directory fuzz-tokenizer FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	$(MAKE) --no-print-directory fuzz-safetensors FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	$(MAKE) --no-print-directory fuzz-data FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	$(MAKE) --no-print-directory fuzz-model FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	$(MAKE) --no-print-directory fuzz-request FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	$(MAKE) --no-print-directory fuzz-body FUZZ_SECONDS=$(CI_FUZZ_SECONDS)

# The encoder suites run twice: with the projections on oneDNN and packed
# weights (src/aiserve_gemm.c), and with AISERVE_GEMM=blas, the OpenBLAS
# path kept for comparison.  The training engine's gradients run again in
# bf16 mixed precision (skipped without AVX512-BF16 or AMX).
test-unit: unit-tests $(DEFAULT_MODEL)/model.safetensors
	prove --exec '' $(UNIT_TESTS)
	AISERVE_GEMM=blas prove --exec '' $(filter $(BUILD)/t/test_encoder%,$(UNIT_TESTS))
	AISERVE_TRAIN_DTYPE=bf16 prove --exec '' $(BUILD)/t/test_train_grad

test-nginx: module $(UNIT_HELPERS) $(EXIT_DELAY) $(DEFAULT_MODEL)/model.safetensors
	prove -I t/lib -r t/
	TEST_NGINX_USE_HUP=1 prove -I t/lib -r t/

# The README's two commands on a throwaway Debian 12 root built with
# mmdebstrap (needs root and the network; not part of `make test`):
# tools/test-fresh.sh says how, and which variables it takes.
test-fresh:
	tools/test-fresh.sh

clean:
	rm -rf $(BUILD) $(TOOLS)

-include $(sort $(wildcard mk/*.mk))
include kernels/kernels.mk
