/*
 * aiserve safetensors reader: the file format of Hugging Face `safetensors`
 * (https://github.com/huggingface/safetensors), mapped read-only.
 *
 * Layout: 8-byte little-endian header size N, N bytes of JSON header
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {str: str}}), then the data buffer.  Validation follows
 * the reference reader (safetensors' `SafeTensors::deserialize` /
 * `Metadata::validate`): header at most 100 MB, valid UTF-8 JSON object,
 * known dtypes, offsets that tile the data buffer exactly (no gaps, no
 * overlap, in bounds), byte length = product(shape) * dtype size, and the
 * file size exact.
 *
 * No nginx types.  An opened file is read-only and may be shared by threads.
 */
#ifndef AISERVE_SAFETENSORS_H
#define AISERVE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define AISERVE_ST_MAX_HEADER  (100 * 1024 * 1024)
#define AISERVE_ST_MAX_DIMS    8

typedef enum {
    AISERVE_ST_BOOL = 0,
    AISERVE_ST_U8,
    AISERVE_ST_I8,
    AISERVE_ST_F8_E5M2,
    AISERVE_ST_F8_E4M3,
    AISERVE_ST_I16,
    AISERVE_ST_U16,
    AISERVE_ST_F16,
    AISERVE_ST_BF16,
    AISERVE_ST_I32,
    AISERVE_ST_U32,
    AISERVE_ST_F32,
    AISERVE_ST_F64,
    AISERVE_ST_I64,
    AISERVE_ST_U64
} aiserve_st_dtype_e;

typedef struct {
    char                *name;
    aiserve_st_dtype_e   dtype;
    size_t               ndim;
    size_t               shape[AISERVE_ST_MAX_DIMS];
    size_t               n_elements;
    const uint8_t       *data;          /* into the mapping */
    size_t               n_bytes;
} aiserve_st_tensor_t;

typedef struct {
    char                 *path;
    void                 *map;          /* NULL when parsed from memory */
    size_t                map_len;
    aiserve_st_tensor_t  *tensors;      /* sorted by name */
    size_t                n_tensors;
} aiserve_st_file_t;

/*
 * Maps PATH read-only and validates it.  Returns NULL with a message naming
 * the file (and the tensor, where one is at fault) in err.
 */
aiserve_st_file_t *aiserve_st_open(const char *path, char *err,
    size_t err_len);

/*
 * Validates the LEN bytes at BUF as a whole safetensors file (header size,
 * header, data) without copying the data; NAME is used in error messages.
 * The result points into BUF, which must outlive it.  This is the parser
 * the libFuzzer target drives.
 */
aiserve_st_file_t *aiserve_st_parse(const uint8_t *buf, size_t len,
    const char *name, char *err, size_t err_len);

void aiserve_st_close(aiserve_st_file_t *st);

/* The tensor called NAME, or NULL.  O(log n_tensors). */
const aiserve_st_tensor_t *aiserve_st_find(const aiserve_st_file_t *st,
    const char *name);

/* "F32", "BF16", ... */
const char *aiserve_st_dtype_name(aiserve_st_dtype_e dtype);

/* Bytes per element of DTYPE. */
size_t aiserve_st_dtype_size(aiserve_st_dtype_e dtype);

/*
 * Converts N elements of an F32, F16 or BF16 tensor's bytes (little
 * endian, any alignment) to float.  Returns 0, or -1 for other dtypes.
 */
int aiserve_st_to_f32(aiserve_st_dtype_e dtype, const uint8_t *src,
    float *dst, size_t n);

#endif /* AISERVE_SAFETENSORS_H */
