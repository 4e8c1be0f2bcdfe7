/*
 * The table of libaiserve_gpu.so (aiserve_gpu.h), its only exported
 * symbol, the driver probe and the device-buffer helpers of the check
 * entries.
 */
#include <dlfcn.h>
#include <string.h>

#include "common.cuh"

#define STR2(x)  #x
#define STR(x)   STR2(x)

int
aiserve_gpu_fail(char *err, size_t err_len, const char *what, cudaError_t e)
{
    snprintf(err, err_len, "%s: %s (%s)", what, cudaGetErrorString(e),
             cudaGetErrorName(e));
    return -1;
}

/* HOST NULL: the buffer is allocated, not filled. */
int
aiserve_gpu_upload(aiserve_gpu_bufs_t *b, void **dev, const void *host,
    size_t bytes, char *err, size_t err_len)
{
    cudaError_t  e;

    if (b->n == (int) (sizeof(b->p) / sizeof(b->p[0]))) {
        snprintf(err, err_len, "more than %d device buffers", b->n);
        return -1;
    }

    e = cudaMalloc(dev, bytes > 0 ? bytes : 1);
    if (e != cudaSuccess) {
        return aiserve_gpu_fail(err, err_len, "cudaMalloc", e);
    }
    b->p[b->n++] = *dev;

    if (host != NULL && bytes > 0) {
        e = cudaMemcpy(*dev, host, bytes, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            return aiserve_gpu_fail(err, err_len, "cudaMemcpy", e);
        }
    }

    return 0;
}

void
aiserve_gpu_free_all(aiserve_gpu_bufs_t *b)
{
    while (b->n > 0) {
        cudaFree(b->p[--b->n]);
    }
}

int
aiserve_gpu_check_seqlens(const int32_t *cu, size_t B, size_t T, char *err,
    size_t err_len)
{
    size_t  b;

    if (cu[0] != 0 || (size_t) cu[B] != T) {
        snprintf(err, err_len, "cu_seqlens[0] %d, cu_seqlens[%zu] %d: want "
                 "0 and T %zu", cu[0], B, cu[B], T);
        return -1;
    }

    for (b = 0; b < B; b++) {
        if (cu[b + 1] <= cu[b]) {
            snprintf(err, err_len, "sequence %zu is empty or negative "
                     "(cu_seqlens %d, %d)", b, cu[b], cu[b + 1]);
            return -1;
        }
    }

    return 0;
}

static int
aiserve_gpu_probe(int device, char *info, size_t info_len, char *err,
    size_t err_len)
{
    void            *drv;
    int              n = 0, drv_ver = 0, rt_ver = 0;
    cudaError_t      e;
    cudaDeviceProp   prop;

    /* the static runtime loads the driver library itself; opening it
     * first gives the loader's own reason when it is missing */
    drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (drv == NULL) {
        snprintf(err, err_len, "CUDA driver not found (%s)", dlerror());
        return -1;
    }

    e = cudaDriverGetVersion(&drv_ver);
    if (e == cudaSuccess) {
        e = cudaRuntimeGetVersion(&rt_ver);
    }
    if (e == cudaSuccess) {
        e = cudaGetDeviceCount(&n);
    }
    if (e != cudaSuccess) {
        return aiserve_gpu_fail(err, err_len, "CUDA initialisation", e);
    }

    if (device < 0 || device >= n) {
        snprintf(err, err_len, "device %d of %d CUDA devices", device, n);
        return -1;
    }

    e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
        return aiserve_gpu_fail(err, err_len, "cudaGetDeviceProperties", e);
    }

    snprintf(info, info_len, "device %d: %s, sm_%d%d, %zu MiB, driver %d.%d, "
             "runtime %d.%d", device, prop.name, prop.major, prop.minor,
             prop.totalGlobalMem >> 20, drv_ver / 1000, drv_ver % 1000 / 10,
             rt_ver / 1000, rt_ver % 1000 / 10);

    if (prop.major < 8) {
        snprintf(err, err_len, "%s: compute capability %d.%d < 8.0 (sm_80 "
                 "or newer needed)", prop.name, prop.major, prop.minor);
        return -1;
    }

    return 0;
}

static const aiserve_gpu_backend_t  aiserve_gpu_backend = {
    AISERVE_GPU_ABI,
    "aiserve-gpu " STR(AISERVE_GPU_ABI) " cuda " STR(CUDART_VERSION),
    aiserve_gpu_probe,
    aiserve_gpu_embed_ln,
    aiserve_gpu_residual_ln,
    aiserve_gpu_gelu_erf,
    aiserve_gpu_attention_ref,
    aiserve_gpu_pool,
    aiserve_gpu_gemm_bias,
    aiserve_gpu_seq_cls_head
};

extern "C" __attribute__((visibility("default")))
const aiserve_gpu_backend_t *
aiserve_gpu_backend_get(uint32_t abi)
{
    return abi == AISERVE_GPU_ABI ? &aiserve_gpu_backend : NULL;
}
