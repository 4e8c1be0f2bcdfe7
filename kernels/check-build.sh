#!/bin/bash
# The build gates of libaiserve_gpu.so (shared/GPU.md section 4):
#   check-build.sh SO PTXAS_LOG...
# 1. every aiserve_ kernel in the ptxas reports (-Xptxas -v) has 0 bytes of
#    stack frame, spill stores and spill loads;
# 2. `nm -D --defined-only SO` lists aiserve_gpu_backend_get and nothing else;
# 3. SO needs no CUDA library but libcublasLt.so.13 (cudart is static;
#    libcuda is dlopen()ed at run time).
# Prints what it checked; exits 1 naming the first gate that fails.
set -u
so=$1; shift
fail=0

kernels=0
spilled=0
while IFS= read -r line; do
    kernels=$((kernels + 1))
    case $line in
    *"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"*) ;;
    *) echo "gate: spills or stack frame: $line"; spilled=1; fail=1 ;;
    esac
done < <(awk '/Function properties for .*aiserve_/ { name = $NF; getline;
              sub(/^ptxas info *: */, ""); print name ": " $0 }' "$@")
if [ "$kernels" -eq 0 ]; then
    echo "gate: no aiserve_ kernel in the ptxas reports ($*)"
    fail=1
elif [ "$spilled" -eq 0 ]; then
    echo "gate: $kernels aiserve_ kernel builds, no spills, no stack frame"
fi

syms=$(nm -D --defined-only "$so" | awk '$2 != "A" { print $3 }')
if [ "$syms" != "aiserve_gpu_backend_get" ]; then
    echo "gate: $so exports more than aiserve_gpu_backend_get:"
    echo "$syms" | head -20
    fail=1
else
    echo "gate: $so exports only aiserve_gpu_backend_get"
fi

libs=$(objdump -p "$so" | awk '$1 == "NEEDED" { print $2 }')
cuda=$(echo "$libs" | grep -Ei 'cu|nv' | grep -v '^libcublasLt\.so\.13$')
if [ -n "$cuda" ] || ! echo "$libs" | grep -qx 'libcublasLt\.so\.13'; then
    echo "gate: $so needs" $libs "(want libcublasLt.so.13 and no other CUDA library)"
    fail=1
else
    echo "gate: $so needs" $libs
fi

exit $fail
