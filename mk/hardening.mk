# Hardening (issue 15): other compilers and levels, sanitizers.  Included by
# the Makefile.
#
#   make build-matrix                  the engine, tools and unit tests with
#                                      gcc and clang at -O1, -O2 and -O3
#                                      (-Werror), each in build-matrix/CC-On/
#   make CC=clang BUILD=DIR TOOLDIR=DIR/tools NGX_SRC=COPY all
#                                      one such build, by hand
#   make test-asan                     engine, tools, unit tests and module
#                                      with ASan and UBSan in build-asan/;
#                                      the unit tests and the t/ suites run
#                                      on them, any report fails the run
#
#   make test-clang                    everything built by clang in
#                                      build-clang/, then the unit tests
#                                      and the t/ suites on it

MATRIX_CCS     ?= gcc clang
MATRIX_LEVELS  ?= 1 2 3
MATRIX_DIR     := build-matrix

.PHONY: build-matrix test-asan test-clang

# Each build is its own make (its own BUILD and TOOLDIR), so the objects of
# one compiler or level never stand in for another's.
build-matrix: $(BUILD)/.deps-ok
	@set -e; for cc in $(MATRIX_CCS); do for o in $(MATRIX_LEVELS); do \
	    d=$(MATRIX_DIR)/$$cc-O$$o; echo "== $$cc -O$$o ($$d)"; \
	    mkdir -p $$d && cp -p $(BUILD)/.deps-ok $$d/; \
	    $(MAKE) --no-print-directory BUILD=$$d TOOLDIR=$$d/tools CC=$$cc \
	        CFLAGS="-O$$o -g" $(ENGINE_LIB:$(BUILD)/%=$$d/%) \
	        $(TOOLS:$(TOOLDIR)/%=$$d/tools/%) \
	        $(UNIT_TESTS:$(BUILD)/%=$$d/%); \
	done; done

# --- sanitizers --------------------------------------------------------------
# gcc's ASan and UBSan; every report is fatal (-fno-sanitize-recover=all).
# The module is compiled with the same flags through configure's
# --with-cc-opt and --with-ld-opt, from a copy of nginx-dev's configure tree
# (configure writes into the tree it runs from).  /usr/sbin/nginx is not
# instrumented, so the runner preloads the sanitizer runtimes into nginx
# only (TEST_NGINX_SANITIZER_PRELOAD, t/lib/Test/Nginx/Socket.pm), with
# their reports written to the server root's logs/ and read after every
# block: a report fails that block.
SAN_BUILD      := build-asan
SAN_CC         ?= gcc
SAN_FLAGS      := -fsanitize=address,undefined -fno-sanitize-recover=all \
                  -fno-omit-frame-pointer
SAN_ASAN_OPTIONS  := halt_on_error=1:abort_on_error=1:detect_leaks=1
SAN_UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1
SAN_UNIT_TESTS := $(UNIT_TESTS:$(BUILD)/%=$(SAN_BUILD)/%)

# The unit tests that run a tool (test_tokenizer, test_eval) run the one in
# tools/, so the default build's tools are built first.
test-asan: tools $(UNIT_HELPERS) $(EXIT_DELAY) $(UBSAN_LOG_PATH) \
           $(DEFAULT_MODEL)/model.safetensors
	@$(call other_setup,$(SAN_BUILD))
	$(call other_build,$(SAN_BUILD),$(SAN_CC),-O1 -g $(SAN_FLAGS),-g $(SAN_FLAGS),$(SAN_FLAGS))
	ASAN_OPTIONS=$(SAN_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS) \
	    prove --exec '' $(SAN_UNIT_TESTS)
	$(SAN_NGINX_ENV) prove -I t/lib -r t/
	$(SAN_NGINX_ENV) TEST_NGINX_USE_HUP=1 prove -I t/lib -r t/

# --- clang -------------------------------------------------------------------
# make test-clang: everything built by clang in build-clang/ (the module
# too: configure takes CC from the environment), then the unit tests and
# the t/ suites on it, as make test runs them.
CLANG_BUILD    := build-clang

test-clang: tools $(UNIT_HELPERS) $(EXIT_DELAY) $(DEFAULT_MODEL)/model.safetensors
	@$(call other_setup,$(CLANG_BUILD))
	$(call other_build,$(CLANG_BUILD),clang,-O2 -g)
	prove --exec '' $(UNIT_TESTS:$(BUILD)/%=$(CLANG_BUILD)/%)
	$(CLANG_NGINX_ENV) prove -I t/lib -r t/
	$(CLANG_NGINX_ENV) TEST_NGINX_USE_HUP=1 prove -I t/lib -r t/

# The suites run clang's module and clang's tools: t/070 and t/075 compare
# the models a job trains with aiserve-train's bit for bit, which holds
# only for one compiler's build (clang builds the element-wise kernels for
# the baseline x86-64, gcc for AVX2 and AVX-512 too).
CLANG_NGINX_ENV = TEST_NGINX_AISERVE_MODULE=$(ROOT)/$(CLANG_BUILD)/ngx_http_aiserve_module.so \
                  TEST_NGINX_AISERVE_TOOLS=$(ROOT)/$(CLANG_BUILD)/tools

# $(call other_setup,DIR): DIR ready for a build (make deps done, a copy of
# nginx-dev's configure tree, since configure writes into its tree).
other_setup = mkdir -p $(1) && cp -p $(BUILD)/.deps-ok $(1)/ \
              && { [ -e $(1)/nginx-src/configure ] || cp -r $(NGX_SRC) $(1)/nginx-src; }

# $(call other_build,DIR,CC,CFLAGS[,NGX_CC_OPT,NGX_LD_OPT]): the unit tests,
# the tools and the module built in DIR.
other_build = $(MAKE) --no-print-directory BUILD=$(1) TOOLDIR=$(1)/tools \
              CC=$(2) CFLAGS="$(3)" NGX_SRC=$(ROOT)/$(1)/nginx-src \
              NGX_CC_OPT="$(4)" NGX_LD_OPT="$(5)" \
              $(UNIT_TESTS:$(BUILD)/%=$(1)/%) $(TOOLS:$(TOOLDIR)/%=$(1)/tools/%) \
              $(1)/ngx_http_aiserve_module.so

# nginx does not free its pools at exit: leak checking is off there.  The
# shim after the runtimes sends UBSan's reports to their log_path (with both
# runtimes preloaded, libubsan's own start-up sets libasan's path instead).
SAN_NGINX_ENV   = TEST_NGINX_AISERVE_MODULE=$(ROOT)/$(SAN_BUILD)/ngx_http_aiserve_module.so \
                  TEST_NGINX_SANITIZER_PRELOAD="$(call dep_shell,$(SAN_CC) -print-file-name=libasan.so) $(call dep_shell,$(SAN_CC) -print-file-name=libubsan.so) $(ROOT)/$(UBSAN_LOG_PATH)" \
                  TEST_NGINX_ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=0 \
                  TEST_NGINX_UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS)

# --- the whole model load under libFuzzer ------------------------------------
#   make fuzz-model [FUZZ_SECONDS=30]  libFuzzer, ASan and UBSan over a model
#                                      directory (t/fuzz/fuzz_model.c): the
#                                      engine built whole with $(FUZZ_CC)
# Seeds: the tiny models (fp32 and bf16, classification, NER, pooling), in
# the target's format; -max_len holds the largest of them.
FUZZ_ENGINE_OBJS := $(patsubst src/%.c,$(BUILD)/fuzz/engine/%.o,$(ENGINE_SRCS))
FUZZ_MODEL       := $(BUILD)/fuzz/fuzz_model
FUZZ_MODEL_SEEDS := tiny-bert-seq-cls tiny-bert-seq-cls-bf16 tiny-bert-ner-bf16 \
                    tiny-st-max tiny-st-cls
FUZZ_MODEL_FILES := config.json model.safetensors tokenizer.json vocab.txt \
                    tokenizer_config.json special_tokens_map.json modules.json \
                    1_Pooling/config.json

.PHONY: fuzz-model

$(BUILD)/fuzz/engine/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fPIC -pthread $(DEP_CFLAGS) -c $< -o $@

$(FUZZ_MODEL): t/fuzz/fuzz_model.c $(FUZZ_ENGINE_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -pthread $(DEP_CFLAGS) $< $(FUZZ_ENGINE_OBJS) \
	    -o $@ $(DEP_LIBS)

fuzz-model: $(FUZZ_MODEL)
	@mkdir -p $(BUILD)/fuzz/corpus-model
	@for m in $(FUZZ_MODEL_SEEDS); do \
	    for f in $(FUZZ_MODEL_FILES); do \
	        [ -f models/$$m/$$f ] && cat models/$$m/$$f; \
	        printf '\n==aiserve-fuzz-file==\n'; \
	    done > $(BUILD)/fuzz/corpus-model/seed-$$m; \
	done
	$(FUZZ_MODEL) -max_total_time=$(FUZZ_SECONDS) -max_len=400000 \
	    -dict=t/fuzz/model.dict -print_final_stats=1 \
	    $(BUILD)/fuzz/corpus-model

# --- the request side under libFuzzer ----------------------------------------
#   make fuzz-request [FUZZ_SECONDS=30] libFuzzer, ASan and UBSan over the
#                                      JSON body of a request
#                                      (t/fuzz/fuzz_request.c): the module's
#                                      src/ngx_http_aiserve_request.c and
#                                      src/ngx_http_aiserve_body.c, which
#                                      call no function of nginx, compiled
#                                      with nginx's headers (the configure
#                                      tree and $(BUILD)'s generated ones)
# Seeds: the request bodies of the t/ suites (t/fuzz/request-seeds.pl).
FUZZ_REQUEST     := $(BUILD)/fuzz/fuzz_request
FUZZ_NGX_INC      = $(addprefix -I$(NGX_SRC)/src/,core event event/modules \
                        os/unix http http/modules http/v2) -I$(BUILD)

.PHONY: fuzz-request

$(FUZZ_REQUEST): t/fuzz/fuzz_request.c t/fuzz/fuzz_alloc.h \
                 src/ngx_http_aiserve_request.c src/ngx_http_aiserve_body.c \
                 $(wildcard src/ngx_http_aiserve*.h) $(FUZZ_ENGINE_OBJS) \
                 $(BUILD)/Makefile
	$(FUZZ_CC) $(FUZZ_CFLAGS) -pthread $(DEP_CFLAGS) $(FUZZ_NGX_INC) \
	    t/fuzz/fuzz_request.c src/ngx_http_aiserve_request.c \
	    src/ngx_http_aiserve_body.c $(FUZZ_ENGINE_OBJS) -o $@ $(DEP_LIBS)

fuzz-request: $(FUZZ_REQUEST)
	@t/fuzz/request-seeds.pl $(BUILD)/fuzz/corpus-request
	$(FUZZ_REQUEST) -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
	    -dict=t/fuzz/request.dict \
	    -print_final_stats=1 $(BUILD)/fuzz/corpus-request

# --- the request body under libFuzzer ----------------------------------------
#   make fuzz-body [FUZZ_SECONDS=30]   libFuzzer, ASan and UBSan over the
#                                      body before the request side reads it
#                                      (t/fuzz/fuzz_body.c): the buffers
#                                      joined, jansson's parse, the repair of
#                                      invalid UTF-8, in the module's
#                                      src/ngx_http_aiserve_body.c (nginx's
#                                      headers, as fuzz-request)
# Seeds: the request bodies of the t/ suites and bodies of invalid UTF-8,
# in several layouts of buffers (t/fuzz/body-seeds.pl).
FUZZ_BODY        := $(BUILD)/fuzz/fuzz_body

.PHONY: fuzz-body

$(FUZZ_BODY): t/fuzz/fuzz_body.c t/fuzz/fuzz_alloc.h \
              src/ngx_http_aiserve_body.c $(wildcard src/ngx_http_aiserve*.h) \
              $(BUILD)/Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEP_CFLAGS) $(FUZZ_NGX_INC) \
	    t/fuzz/fuzz_body.c src/ngx_http_aiserve_body.c -o $@ \
	    $(call dep_shell,pkg-config --libs jansson libutf8proc)

fuzz-body: $(FUZZ_BODY)
	@t/fuzz/body-seeds.pl $(BUILD)/fuzz/corpus-body
	$(FUZZ_BODY) -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
	    -dict=t/fuzz/body.dict -print_final_stats=1 $(BUILD)/fuzz/corpus-body
