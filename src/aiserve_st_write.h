/*
 * aiserve safetensors writer: named tensors to a file in the format of
 * Hugging Face `safetensors` (https://github.com/huggingface/safetensors),
 * byte for byte as its serializer writes it (safetensors/src/tensor.rs:
 * prepare / serialize_to_file):
 *
 *   - 8-byte little-endian header size N, then N bytes of compact JSON:
 *     {"__metadata__":{...},"NAME":{"dtype":"F32","shape":[..],
 *     "data_offsets":[begin,end]},...}, padded with spaces to a multiple
 *     of 8, then the data buffer;
 *   - tensors ordered by dtype, descending in the format's dtype order
 *     (so F32 before BF16 before F16), then by name (bytewise), and laid
 *     out in that order with no gaps;
 *   - strings escaped as serde_json escapes them.
 *
 * The file is written atomically: to a temporary file in the same
 * directory, fsync'ed, renamed over PATH, and the directory fsync'ed, so
 * a reader sees the old file or the whole new one.  No nginx types.
 */
#ifndef AISERVE_ST_WRITE_H
#define AISERVE_ST_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "aiserve_safetensors.h"

/* One tensor to write: its bytes are n_elements * dtype size, little
 * endian, row-major (as the reader returns them). */
typedef struct {
    const char          *name;
    aiserve_st_dtype_e   dtype;
    size_t               ndim;
    size_t               shape[AISERVE_ST_MAX_DIMS];
    const void          *data;
} aiserve_st_wtensor_t;

/* One "__metadata__" entry (transformers writes {"format": "pt"}). */
typedef struct {
    const char  *key;
    const char  *value;
} aiserve_st_meta_t;

/*
 * Writes the N_TENSORS tensors and the N_META metadata entries (written
 * in the order given; none: no "__metadata__") to PATH.  Names and
 * metadata must be valid UTF-8; tensor names unique, not "__metadata__".
 * Returns 0, or -1 with a message naming the file (and the tensor at
 * fault) in err; on failure PATH is untouched and no temporary file is
 * left.
 */
int aiserve_st_write(const char *path, const aiserve_st_wtensor_t *tensors,
    size_t n_tensors, const aiserve_st_meta_t *meta, size_t n_meta,
    char *err, size_t err_len);

/*
 * The header aiserve_st_write() would write (JSON and its padding, no
 * size prefix), malloc'ed, its length in *len.  NULL with err set on bad
 * input.  Exposed for tests that compare headers with the reference.
 */
char *aiserve_st_header(const aiserve_st_wtensor_t *tensors,
    size_t n_tensors, const aiserve_st_meta_t *meta, size_t n_meta,
    size_t *len, const char *name, char *err, size_t err_len);

/*
 * The tensors of an opened file as a list to write (names, shapes and
 * data point into ST, which must outlive the list), in ST's order (by
 * name); malloc'ed, one free().  NULL when out of memory.
 */
aiserve_st_wtensor_t *aiserve_st_wtensors(const aiserve_st_file_t *st);

/*
 * Converts N floats to F16 or BF16 bytes (little endian) at DST, rounding
 * to nearest even as torch's Tensor.to(torch.float16 / torch.bfloat16)
 * does (NaN stays NaN, overflow to F16 infinity).  Returns 0, or -1 for
 * other dtypes.
 */
int aiserve_st_from_f32(aiserve_st_dtype_e dtype, const float *src,
    uint8_t *dst, size_t n);

/*
 * Writes LEN bytes at DATA to PATH atomically (temporary file in the same
 * directory, fsync, rename, directory fsync).  Returns 0, or -1 with a
 * message naming PATH in err.
 */
int aiserve_write_file_atomic(const char *path, const void *data,
    size_t len, char *err, size_t err_len);

#endif /* AISERVE_ST_WRITE_H */
