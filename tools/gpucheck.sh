#!/bin/bash
# The one-shot device check of the GPU backend (shared/GPU.md section 6):
#
#   tools/gpucheck.sh OUTDIR
#
# run from the repository root on a machine with an NVIDIA GPU (sm_80 or
# newer), `make deps` done.  Each stage runs under `timeout`, a failure
# does not stop the next; logs and results.json go to OUTDIR (no
# subfolders), the summary table is printed last.  GPUCHECK_ONLY=<stage>
# runs one stage (and the summary).  Exit 0 only when every stage that
# exists passed (a skipped sanitizer tool is logged, not failed); 1
# otherwise.  The script never touches clocks, power,
# persistence, MIG or resets.
#
# Prepared on a CPU machine (optional): .gpucheck/lib/ with
# libaiserve_gpu.so and build/gpu/*.ptxas from `make gpu`, the build used
# when `make gpu` fails on the GPU host (git ignores .gpucheck/).
#
# Stages built so far: env, build, kernels (fp16 and bf16), sanitizer.
# The stages of shared/GPU.md that need the GPU forward pass (models,
# parity, forktest, bench, contention) are not built yet: the summary
# lists them as "not built", and the check reports INCOMPLETE.
set -u

out=${1:?usage: tools/gpucheck.sh OUTDIR}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
log=$out/gpucheck.log
: >"$log"
only=${GPUCHECK_ONLY:-}
declare -A status secs
order=()

say() { echo "$*" | tee -a "$log"; }

# stage NAME CAP_SECONDS COMMAND...: runs COMMAND under timeout, records
# PASS / FAIL (rc) / TIMEOUT and the seconds it took
stage() {
    local name=$1 cap=$2 t0 rc
    shift 2
    order+=("$name")
    if [ -n "$only" ] && [ "$only" != "$name" ]; then
        status[$name]="skipped (GPUCHECK_ONLY=$only)"
        secs[$name]=0
        return
    fi
    say "=== $name (cap ${cap}s) $(date -u +%H:%M:%S)"
    t0=$(date +%s)
    # a stage is a function of this script: exported, run by a bash
    # under timeout
    timeout --kill-after=5 "$cap" bash -c '"$@"' stage "$@" >>"$log" 2>&1
    rc=$?
    secs[$name]=$(( $(date +%s) - t0 ))
    case $rc in
    0) status[$name]=PASS ;;
    2) status[$name]="FAIL: no usable GPU or backend" ;;
    3) status[$name]="skipped (reason in gpucheck.log)" ;;
    124|137) status[$name]="TIMEOUT after ${cap}s" ;;
    *) status[$name]="FAIL (rc $rc)" ;;
    esac
    say "=== $name: ${status[$name]} in ${secs[$name]}s"
}

# libcublasLt.so.13: ldconfig, then lib64 beside nvcc, then Python's
# nvidia.cublas package (shared/GPU.md "Libraries")
find_cublaslt() {
    local d
    d=$(ldconfig -p 2>/dev/null | awk '/libcublasLt\.so\.13 / { print $NF; exit }')
    [ -n "$d" ] && { dirname "$d"; return; }
    d=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/../lib64
    [ -e "$d/libcublasLt.so.13" ] && { (cd "$d" && pwd); return; }
    for py in .venv/bin/python python3; do
        d=$($py -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null) || continue
        d=$(find "$d" -name libcublasLt.so.13 -print -quit 2>/dev/null)
        [ -n "$d" ] && { dirname "$d"; return; }
    done
}

env_stage() {
    local lt rc
    (
        date -u
        uname -a
        nproc
        if ! command -v nvidia-smi >/dev/null; then
            echo "nvidia-smi not found: no NVIDIA driver on this machine"
            exit 1
        fi
        nvidia-smi --query-gpu=name,driver_version,compute_cap,clocks.sm,clocks.mem,memory.total,memory.used --format=csv || exit 1
        nvidia-smi
        command -v nvcc && nvcc --version
        for py in .venv/bin/python python3; do
            $py -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>/dev/null && break
        done
        lt=$(find_cublaslt)
        echo "libcublasLt.so.13: ${lt:-not found}"
        if command -v compute-sanitizer >/dev/null; then
            compute-sanitizer --version
            compute-sanitizer --help | grep -E -- '--kernel-name|--filter' | head -3
        else
            echo "compute-sanitizer: not found"
        fi
        df -h . /tmp
    ) >"$out/env.txt" 2>&1
    rc=$?
    cat "$out/env.txt"
    return $rc
}

build_stage() {
    local cc archs
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
    case $cc in
    90) archs=90a ;;
    80|86|87|89) archs=$cc ;;
    "") archs="80 90a" ;;
    *) archs=$cc ;;
    esac
    (
        echo "GPU_ARCHS=$archs (compute capability ${cc:-unknown})"
        make -B tools/aiserve-gpucheck || exit 1
        if ! make -B -j"$(nproc)" gpu GPU_ARCHS="$archs"; then
            # the fallback prepared on a CPU machine (nvcc 13.0, sm_80 and
            # sm_90a): .gpucheck/lib/libaiserve_gpu.so and its ptxas logs
            [ -e .gpucheck/lib/libaiserve_gpu.so ] || exit 1
            echo "make gpu failed here: checking the prepared .gpucheck/lib/libaiserve_gpu.so"
            mkdir -p build
            cp .gpucheck/lib/libaiserve_gpu.so build/ || exit 1
            kernels/check-build.sh build/libaiserve_gpu.so .gpucheck/lib/*.ptxas || exit 1
        fi
        cat build/gpu/*.ptxas
        if command -v cuobjdump >/dev/null; then
            cuobjdump --list-elf build/libaiserve_gpu.so
        fi
        for f in build/libaiserve_gpu.so tools/aiserve-gpucheck \
                 build/ngx_http_aiserve_module.so; do
            if [ -e "$f" ]; then
                echo "ldd $f:"
                ldd "$f"
            fi
        done
        exit 0
    ) >"$out/build.log" 2>&1
    local rc=$?
    tail -20 "$out/build.log"
    return $rc
}

# exit 2: no usable backend or GPU (the log says which)
kernels_stage() {
    local rc=0
    tools/aiserve-gpucheck kernels --dtype fp16 || rc=$?
    [ $rc -eq 2 ] && return 2
    tools/aiserve-gpucheck kernels --dtype bf16 --quick || rc=$?
    return $rc
}

# memcheck + initcheck, racecheck, synccheck on the quick kernel check,
# only our kernels instrumented
sanitizer_stage() {
    local filt tool rc=0
    if ! command -v compute-sanitizer >/dev/null; then
        echo "compute-sanitizer not found: skipped" | tee "$out/sanitizer.log"
        return 3
    fi
    if ! tools/aiserve-gpucheck probe; then
        echo "no usable GPU: skipped" | tee "$out/sanitizer.log"
        return 3
    fi
    if compute-sanitizer --help | grep -q -- '--kernel-name'; then
        filt="--kernel-name kns=aiserve"
    else
        filt="--filter kns=aiserve"
    fi
    : >"$out/sanitizer.log"
    for tool in "memcheck --leak-check full" initcheck racecheck synccheck; do
        echo "--- $tool" >>"$out/sanitizer.log"
        # shellcheck disable=SC2086
        compute-sanitizer --tool $tool $filt --error-exitcode 9 \
            tools/aiserve-gpucheck kernels --quick >>"$out/sanitizer.log" 2>&1
        case $? in
        0) echo "$tool: clean" ;;
        9) echo "$tool: errors (sanitizer.log)"; rc=1 ;;
        *) if grep -qi "not supported\|unsupported" "$out/sanitizer.log"; then
               echo "$tool: device unsupported by the sanitizer: skipped"
               [ $rc -eq 0 ] && rc=3
           else
               echo "$tool: failed to run"; rc=1
           fi ;;
        esac
    done
    return $rc
}

export out
export -f find_cublaslt env_stage build_stage kernels_stage sanitizer_stage

lt=$(find_cublaslt)
[ -n "$lt" ] && export LD_LIBRARY_PATH=$lt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

stage env 10 env_stage
stage build 120 build_stage
stage kernels 60 kernels_stage
stage sanitizer 90 sanitizer_stage

for s in models parity forktest bench contention; do
    order+=("$s")
    status[$s]="not built (needs the GPU forward pass)"
    secs[$s]=0
done

# summary: results.json and the table, last
verdict=PASS
for s in "${order[@]}"; do
    case ${status[$s]} in
    PASS|skipped*) ;;
    "not built"*) [ "$verdict" = PASS ] && verdict=INCOMPLETE ;;
    *) verdict=FAIL ;;
    esac
done
{
    printf '{"verdict": "%s", "gpu": "%s", "stages": [' "$verdict" \
        "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
    sep=
    for s in "${order[@]}"; do
        printf '%s{"stage": "%s", "status": "%s", "seconds": %s}' "$sep" "$s" "${status[$s]}" "${secs[$s]}"
        sep=", "
    done
    printf '], "kernels": ['
    sep=
    grep -E '^(PASS|FAIL) ' "$log" | while read -r verdict_k name dtype rest; do
        printf '%s{"check": "%s", "dtype": "%s", "pass": %s, "line": "%s"}' "$sep" "$name" "$dtype" \
            "$([ "$verdict_k" = PASS ] && echo true || echo false)" "$(echo "$rest" | sed 's/"/\\"/g')"
        sep=", "
    done
    printf ']}\n'
} >"$out/results.json"

{
    echo
    echo "gpucheck summary ($(date -u +%FT%TZ)), logs in $out"
    printf '%-12s %-45s %6s\n' stage status seconds
    for s in "${order[@]}"; do
        printf '%-12s %-45s %6s\n' "$s" "${status[$s]}" "${secs[$s]}"
    done
    grep -E '^kernels (fp16|bf16):' "$log"
    grep -m1 -E 'aiserve-gpucheck: (no usable GPU|cannot load)' "$log"
    echo "verdict: $verdict"
} | tee -a "$log"

[ "$verdict" = PASS ]
