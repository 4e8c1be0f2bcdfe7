/*
 * gemm_bias: one projection through cuBLASLt with its bias epilogue
 * (shared/GPU.md section 2): row-major Y[T, N] = X[T, K] W[N, K]ᵀ + b as
 * column-major m = N, n = T, k = K, A = W (op T, lda = K), B = X (op N,
 * ldb = K), D = Y (ldd = N); fp32 compute and scale, A, B, D and the bias
 * in fp16 or bf16; the first heuristic's algorithm, 32 MiB of workspace
 * (NVIDIA/CUDALibrarySamples cuBLASLt/LtSgemm).
 */
#include <cublasLt.h>

#include "common.cuh"

#define GEMM_WORKSPACE  ((size_t) 32 << 20)

#define LT_TRY(call, what)                                                  \
    do {                                                                    \
        cublasStatus_t  st_ = (call);                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                 \
            snprintf(err, err_len, "gemm_bias: %s: %s (%d)", what,          \
                     cublasLtGetStatusString(st_), (int) st_);              \
            goto done;                                                      \
        }                                                                   \
    } while (0)

int
aiserve_gpu_gemm_bias(aiserve_gpu_dtype_e dtype, size_t T, size_t N,
    size_t K, const uint16_t *x, const uint16_t *w, const uint16_t *b,
    uint16_t *y, char *err, size_t err_len)
{
    aiserve_gpu_bufs_t               bufs = { { 0 }, 0 };
    cublasLtHandle_t                 lt = NULL;
    cublasLtMatmulDesc_t             op = NULL;
    cublasLtMatrixLayout_t           la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t       pref = NULL;
    cublasLtMatmulHeuristicResult_t  heur;
    cublasOperation_t                ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t               epi = CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t                   ty;
    void                            *d_x, *d_w, *d_b, *d_y, *d_ws;
    size_t                           ws = GEMM_WORKSPACE;
    float                            one = 1.0f, zero = 0.0f;
    int                              found = 0, rc = -1;
    cudaError_t                      e;

    if (T == 0 || N == 0 || K == 0) {
        snprintf(err, err_len, "gemm_bias: T %zu, N %zu, K %zu", T, N, K);
        return -1;
    }

    ty = dtype == AISERVE_GPU_BF16 ? CUDA_R_16BF : CUDA_R_16F;

    if (aiserve_gpu_upload(&bufs, &d_x, x, T * K * 2, err, err_len)
        || aiserve_gpu_upload(&bufs, &d_w, w, N * K * 2, err, err_len)
        || aiserve_gpu_upload(&bufs, &d_b, b, N * 2, err, err_len)
        || aiserve_gpu_upload(&bufs, &d_y, y, T * N * 2, err, err_len)
        || aiserve_gpu_upload(&bufs, &d_ws, NULL, ws, err, err_len))
    {
        goto done;
    }

    LT_TRY(cublasLtCreate(&lt), "cublasLtCreate");
    LT_TRY(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
           "cublasLtMatmulDescCreate");
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA,
                                          &ta, sizeof(ta)), "TRANSA");
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB,
                                          &tb, sizeof(tb)), "TRANSB");
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                          &epi, sizeof(epi)), "EPILOGUE");
    LT_TRY(cublasLtMatmulDescSetAttribute(op,
               CUBLASLT_MATMUL_DESC_BIAS_POINTER, &d_b, sizeof(d_b)),
           "BIAS_POINTER");
    LT_TRY(cublasLtMatmulDescSetAttribute(op,
               CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &ty, sizeof(ty)),
           "BIAS_DATA_TYPE");

    LT_TRY(cublasLtMatrixLayoutCreate(&la, ty, K, N, K), "layout A");
    LT_TRY(cublasLtMatrixLayoutCreate(&lb, ty, K, T, K), "layout B");
    LT_TRY(cublasLtMatrixLayoutCreate(&ld, ty, N, T, N), "layout D");

    LT_TRY(cublasLtMatmulPreferenceCreate(&pref), "preference");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref,
               CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
           "MAX_WORKSPACE_BYTES");
    LT_TRY(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1,
                                          &heur, &found), "heuristic");
    if (found == 0) {
        snprintf(err, err_len, "gemm_bias: no cuBLASLt algorithm for m %zu "
                 "n %zu k %zu", N, T, K);
        goto done;
    }

    LT_TRY(cublasLtMatmul(lt, op, &one, d_w, la, d_x, lb, &zero, d_y, ld,
                          d_y, ld, &heur.algo, d_ws, ws, 0),
           "cublasLtMatmul");

    e = cudaMemcpy(y, d_y, T * N * 2, cudaMemcpyDeviceToHost);
    rc = e == cudaSuccess ? 0 : aiserve_gpu_fail(err, err_len, "gemm_bias", e);

done:
    if (pref != NULL) {
        cublasLtMatmulPreferenceDestroy(pref);
    }
    if (ld != NULL) {
        cublasLtMatrixLayoutDestroy(ld);
    }
    if (lb != NULL) {
        cublasLtMatrixLayoutDestroy(lb);
    }
    if (la != NULL) {
        cublasLtMatrixLayoutDestroy(la);
    }
    if (op != NULL) {
        cublasLtMatmulDescDestroy(op);
    }
    if (lt != NULL) {
        cublasLtDestroy(lt);
    }
    aiserve_gpu_free_all(&bufs);
    return rc;
}
