/*
 * libFuzzer target for the request body before the request side reads it
 * (src/ngx_http_aiserve_body.c, the code the handler runs): the buffers
 * nginx read a body into, joined (ngx_http_aiserve_body_join()), and the
 * body parsed by jansson with its invalid UTF-8 repaired
 * (ngx_http_aiserve_body_parse(), ngx_http_aiserve_utf8_repair()).
 *
 * An input is FUZZ_HDR bytes of layout, then the body.  Byte 0: bits 0-2
 * the number of cuts (at most FUZZ_MAX_CUTS), bit 3 the temporary file is
 * one byte short, bit 4 every allocation fails; byte 1: bit i, piece i of
 * the body lies in the temporary file (else in a buffer of memory of its
 * own size); bytes 2 to 7: where the cuts fall, in 256ths of the body.  The
 * temporary file is a real one, holding the body as nginx's client body
 * temporary file does, read with pread() as ngx_read_file() reads it.
 *
 * Besides ASan and UBSan, the target checks properties, and aborts when
 * one fails:
 *   - the joined body is the body, whatever the pieces; a file too short
 *     is NGX_DECLINED, a failed allocation NGX_ERROR, nothing else fails;
 *   - the repaired body is valid UTF-8 by jansson's check and by a walk
 *     with utf8proc (libraries independent of each other), the repair of
 *     the repaired body changes nothing, a valid body comes out as it went
 *     in, and each replaced byte grew by 3 (the marker's 4 bytes);
 *   - the parse fails for UTF-8 only on its first pass: the error of a
 *     repaired body's parse is never json_error_invalid_utf8, and a body
 *     parsed without repair is valid UTF-8.
 *
 * Seeds: the request bodies of the t/ suites and bodies of invalid UTF-8,
 * each in several layouts (t/fuzz/body-seeds.pl).  Build and run:
 * make fuzz-body FUZZ_SECONDS=300
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <utf8proc.h>

#include "ngx_http_aiserve_infer.h"
#include "fuzz_alloc.h"

#define FUZZ_HDR       8
#define FUZZ_MAX_CUTS  6

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ngx_file_t  fuzz_file;


#define fuzz_assert(cond, what)                                              \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_body: %s\n", what);                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char   *dir;
    static char   path[4096];

    (void) argc;
    (void) argv;

    dir = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/fuzz_body.XXXXXX", dir ? dir : "/tmp");

    fuzz_file.fd = mkstemp(path);
    if (fuzz_file.fd == -1) {
        perror("fuzz_body: mkstemp");
        exit(1);
    }

    /* nothing is left behind: the file lives while the descriptor does */
    fuzz_file.name.data = (u_char *) path;
    fuzz_file.name.len = strlen(path);
    unlink(path);

    return 0;
}


/* as ngx_read_file(): one pread(), the bytes read or -1 */
static ssize_t
fuzz_read_file(ngx_file_t *file, u_char *buf, size_t size, off_t offset)
{
    return pread(file->fd, buf, size, offset);
}


/* whether S (LEN bytes) is valid UTF-8 by utf8proc's walk */
static int
fuzz_utf8proc_valid(const u_char *s, size_t len)
{
    size_t            i;
    utf8proc_int32_t  cp;
    utf8proc_ssize_t  k;

    for (i = 0; i < len; i += k) {
        k = utf8proc_iterate(s + i, (utf8proc_ssize_t) (len - i), &cp);
        if (k <= 0) {
            return 0;
        }
    }

    return 1;
}


/* whether S (LEN bytes) is valid UTF-8 by jansson's check */
static int
fuzz_jansson_valid(const u_char *s, size_t len)
{
    json_t  *v;

    v = json_stringn((const char *) s, len);
    if (v == NULL) {
        return 0;
    }

    json_decref(v);
    return 1;
}


static size_t
fuzz_marks(const u_char *s, size_t len)
{
    size_t         n;
    const u_char  *p, *last;

    n = 0;
    last = s + len;

    for (p = s; p + 4 <= last; p++) {
        p = memmem(p, last - p, NGX_HTTP_AISERVE_UTF8_MARK, 4);
        if (p == NULL) {
            break;
        }
        n++;
    }

    return n;
}


static void
fuzz_join(const uint8_t *hdr, const u_char *body, size_t len)
{
    int           short_file, fails, needs_copy;
    off_t         file_end;
    size_t        ncuts, npieces, i, j, cut[FUZZ_MAX_CUTS + 2], t;
    ngx_int_t     rc;
    ngx_str_t     out;
    ngx_buf_t     bufs[FUZZ_MAX_CUTS + 1];
    ngx_chain_t   chain[FUZZ_MAX_CUTS + 1];
    u_char       *mem[FUZZ_MAX_CUTS + 1];

    ncuts = hdr[0] & 7;
    if (ncuts > FUZZ_MAX_CUTS) {
        ncuts = FUZZ_MAX_CUTS;
    }
    short_file = (hdr[0] & 8) != 0;
    fails = (hdr[0] & 16) != 0;
    npieces = ncuts + 1;

    /* cut points, sorted: piece i is [cut[i], cut[i + 1]) */
    cut[0] = 0;
    for (i = 0; i < ncuts; i++) {
        cut[i + 1] = len * hdr[2 + i] / 256;
    }
    cut[npieces] = len;

    for (i = 1; i < npieces; i++) {
        for (j = i; j > 1 && cut[j - 1] > cut[j]; j--) {
            t = cut[j];
            cut[j] = cut[j - 1];
            cut[j - 1] = t;
        }
    }

    fuzz_assert(ftruncate(fuzz_file.fd, 0) == 0, "ftruncate");
    fuzz_assert(len == 0
                || pwrite(fuzz_file.fd, body, len, 0) == (ssize_t) len,
                "pwrite");

    memset(bufs, 0, sizeof(bufs));
    file_end = -1;

    for (i = 0; i < npieces; i++) {
        mem[i] = NULL;
        chain[i].buf = &bufs[i];
        chain[i].next = (i + 1 < npieces) ? &chain[i + 1] : NULL;

        if (hdr[1] & (1u << i)) {
            bufs[i].in_file = 1;
            bufs[i].file = &fuzz_file;
            bufs[i].file_pos = cut[i];
            bufs[i].file_last = cut[i + 1];
            if (cut[i + 1] > cut[i]) {
                file_end = cut[i + 1];
            }
            continue;
        }

        /* a buffer of its own size: ASan sees a read past its end */
        mem[i] = malloc(cut[i + 1] > cut[i] ? cut[i + 1] - cut[i] : 1);
        fuzz_assert(mem[i] != NULL, "malloc");
        memcpy(mem[i], body + cut[i], cut[i + 1] - cut[i]);
        bufs[i].pos = mem[i];
        bufs[i].last = mem[i] + (cut[i + 1] - cut[i]);
    }

    short_file = short_file && file_end > 0;
    if (short_file) {
        fuzz_assert(ftruncate(fuzz_file.fd, file_end - 1) == 0, "ftruncate");
    }

    needs_copy = npieces > 1 || bufs[0].in_file;

    fuzz_alloc_fail = fails;
    rc = ngx_http_aiserve_body_join(chain, fuzz_alloc, NULL, fuzz_read_file,
                                    &out);
    fuzz_alloc_fail = 0;

    if (fails && needs_copy) {
        fuzz_assert(rc == NGX_ERROR, "join: a failed allocation is not "
                    "NGX_ERROR");

    } else if (short_file) {
        fuzz_assert(rc == NGX_DECLINED, "join: a short file is not "
                    "NGX_DECLINED");

    } else {
        fuzz_assert(rc == NGX_OK, "join failed");
        fuzz_assert(out.len == len, "join: the length differs");
        fuzz_assert(len == 0 || memcmp(out.data, body, len) == 0,
                    "join: the bytes differ");
    }

    for (i = 0; i < npieces; i++) {
        free(mem[i]);
    }

    /* no buffers: an empty body */
    rc = ngx_http_aiserve_body_join(NULL, fuzz_alloc, NULL, fuzz_read_file,
                                    &out);
    fuzz_assert(rc == NGX_OK && out.len == 0, "join: no buffers");
}


static void
fuzz_repair(const u_char *body, size_t len)
{
    u_char  *out, *again;
    size_t   n, m;

    out = malloc(len * 4 + 1);
    fuzz_assert(out != NULL, "malloc");

    n = ngx_http_aiserve_utf8_repair(out, body, len);

    fuzz_assert(n <= len * 4, "repair: longer than 4 bytes a byte");
    fuzz_assert(fuzz_jansson_valid(out, n),
                "repair: not valid UTF-8 by jansson");
    fuzz_assert(fuzz_utf8proc_valid(out, n),
                "repair: not valid UTF-8 by utf8proc");
    fuzz_assert(n == len + 3 * (fuzz_marks(out, n) - fuzz_marks(body, len)),
                "repair: a replaced byte did not become the marker");

    if (fuzz_jansson_valid(body, len)) {
        fuzz_assert(n == len && memcmp(out, body, len) == 0,
                    "repair: valid UTF-8 changed");
    }

    again = malloc(n * 4 + 1);
    fuzz_assert(again != NULL, "malloc");

    m = ngx_http_aiserve_utf8_repair(again, out, n);
    fuzz_assert(m == n && memcmp(again, out, n) == 0,
                "repair: not idempotent");

    free(again);
    free(out);
}


static void
fuzz_parse(const u_char *body, size_t len, int fails)
{
    json_t        *doc;
    ngx_int_t      rc;
    ngx_uint_t     repaired;
    json_error_t   err;

    fuzz_alloc_fail = fails;
    rc = ngx_http_aiserve_body_parse(body, len, fuzz_alloc, NULL, &doc,
                                     &repaired, &err);
    fuzz_alloc_fail = 0;

    if (rc == NGX_ERROR) {
        fuzz_assert(fails && doc == NULL && !fuzz_jansson_valid(body, len),
                    "parse: NGX_ERROR without a failed allocation");
        return;
    }

    fuzz_assert(rc == NGX_OK, "parse: neither NGX_OK nor NGX_ERROR");

    if (doc == NULL) {
        fuzz_assert(json_error_code(&err) != json_error_invalid_utf8,
                    repaired ? "parse: invalid UTF-8 after the repair"
                             : "parse: invalid UTF-8 left unrepaired");
        return;
    }

    if (!repaired) {
        fuzz_assert(fuzz_utf8proc_valid(body, len),
                    "parse: a body parsed unrepaired is not valid UTF-8");
    }

    json_decref(doc);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t         len;
    const u_char  *body;

    if (size < FUZZ_HDR) {
        return 0;
    }

    body = data + FUZZ_HDR;
    len = size - FUZZ_HDR;

    fuzz_join(data, body, len);
    fuzz_repair(body, len);
    fuzz_parse(body, len, (data[0] & 16) != 0);

    fuzz_free_all();

    return 0;
}
