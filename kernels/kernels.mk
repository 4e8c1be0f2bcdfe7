# The GPU backend (shared/GPU.md, issue 13): kernels/*.cu and cuBLASLt in
# one shared object, $(GPU_SO), that the module dlopen()s for
# device=gpu; the module and the engine link no CUDA.
#
#   make gpu                    build $(GPU_SO) and run its build gates
#   make gpu GPU_ARCHS=90a      one architecture (80: A100, 90a: H100/H200)
#
# Gates (kernels/check-build.sh): ptxas reports 0 bytes of spills and of
# stack frame for every aiserve_ kernel; `nm -D` shows the one symbol
# aiserve_gpu_backend_get; the object needs libcublasLt.so.13 and no
# other CUDA library (cudart is linked statically).  `make test` runs
# `make gpu` where nvcc is found, without running anything on a device.

NVCC       ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
GPU_ARCHS  ?= 80 90a
GPU_DIR    := $(BUILD)/gpu
GPU_SO     := $(BUILD)/libaiserve_gpu.so
GPU_SRCS   := $(sort $(wildcard kernels/*.cu))
GPU_OBJS   := $(patsubst kernels/%.cu,$(GPU_DIR)/%.o,$(GPU_SRCS))
# sm_X code for each architecture, and PTX of the newest one for later GPUs
GPU_GENCODE = $(foreach a,$(GPU_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
              -gencode arch=compute_$(lastword $(subst a, ,$(GPU_ARCHS))),code=compute_$(lastword $(subst a, ,$(GPU_ARCHS)))
GPU_NVFLAGS = -O3 -std=c++17 $(GPU_GENCODE) -Xptxas -v -Xcompiler -fPIC \
              -Xcompiler -fvisibility=hidden -Xcompiler -Wall \
              -Xcompiler -Werror --Werror all-warnings -Ikernels -Isrc

.PHONY: gpu gpu-gates

gpu: $(GPU_SO) gpu-gates

# ptxas writes its report to stderr: each object keeps its own (.ptxas),
# the gate reads them all.
$(GPU_DIR)/%.o: kernels/%.cu $(wildcard kernels/*.cuh src/aiserve_gpu.h)
	@mkdir -p $(dir $@)
	@test -n "$(NVCC)" || { echo "make gpu: nvcc not found (CUDA 13 toolkit)"; exit 1; }
	$(NVCC) $(GPU_NVFLAGS) -c $< -o $@ 2>$(GPU_DIR)/$*.ptxas \
	    || { cat $(GPU_DIR)/$*.ptxas; exit 1; }

$(GPU_SO): $(GPU_OBJS) kernels/exports.map
	$(NVCC) -shared $(GPU_GENCODE) -o $@ $(GPU_OBJS) -lcublasLt -ldl \
	    -Xlinker --version-script=kernels/exports.map

gpu-gates: $(GPU_SO)
	kernels/check-build.sh $(GPU_SO) $(GPU_OBJS:.o=.ptxas)

# The device check's program links the planner alone (libc, libm), not
# the engine's libraries, so that it builds on a bare GPU host; it needs
# no `make deps`.
$(TOOLDIR)/aiserve-gpucheck: tools/aiserve-gpucheck.c src/aiserve_gpu_plan.c \
        src/aiserve_gpu_plan.h src/aiserve_gpu.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -Isrc \
	    tools/aiserve-gpucheck.c src/aiserve_gpu_plan.c -o $@ -lm
