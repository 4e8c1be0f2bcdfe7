/*
 * gelu_erf: the exact GELU of transformers' "gelu", x/2 (1 + erf(x/√2)),
 * in fp32 on 16-bit storage, in place.  cuBLASLt's GELU epilogue is the
 * tanh approximation, so "gelu" configs take EPILOGUE_BIAS and this
 * kernel (shared/GPU.md kernel 7).  8 elements (16 bytes) a thread.
 */
#include "common.cuh"

template <typename T>
__device__ __forceinline__ T
gelu_one(T v)
{
    float  x = to_f(v);

    return from_f<T>(0.5f * x * (1.0f + erff(x * 0.70710678118654752f)));
}

template <typename T>
__global__ void
aiserve_gelu_erf(size_t n, T *__restrict__ f)
{
    size_t  i = ((size_t) blockIdx.x * blockDim.x + threadIdx.x) * 8;
    uint4   u;
    T      *e;

    if (i + 8 <= n) {
        u = *(const uint4 *) (f + i);
        e = (T *) &u;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            e[j] = gelu_one(e[j]);
        }
        *(uint4 *) (f + i) = u;
        return;
    }

    for (; i < n; i++) {
        f[i] = gelu_one(f[i]);
    }
}

template <typename T>
static int
gelu_run(size_t n, uint16_t *f, char *err, size_t err_len)
{
    aiserve_gpu_bufs_t  b = { { 0 }, 0 };
    void               *d_f;
    int                 rc = -1;
    cudaError_t         e;

    if (aiserve_gpu_upload(&b, &d_f, f, n * 2, err, err_len)) {
        goto done;
    }

    aiserve_gelu_erf<T><<<(unsigned) ((n + 2047) / 2048), 256>>>(n,
                                                                 (T *) d_f);
    e = cudaGetLastError();
    if (e == cudaSuccess) {
        e = cudaMemcpy(f, d_f, n * 2, cudaMemcpyDeviceToHost);
    }
    rc = e == cudaSuccess ? 0 : aiserve_gpu_fail(err, err_len, "gelu_erf", e);

done:
    aiserve_gpu_free_all(&b);
    return rc;
}

int
aiserve_gpu_gelu_erf(aiserve_gpu_dtype_e dtype, size_t n, uint16_t *f,
    char *err, size_t err_len)
{
    if (n == 0) {
        snprintf(err, err_len, "gelu_erf: no elements");
        return -1;
    }

    if (dtype == AISERVE_GPU_BF16) {
        return gelu_run<__nv_bfloat16>(n, f, err, err_len);
    }

    return gelu_run<__half>(n, f, err, err_len);
}
