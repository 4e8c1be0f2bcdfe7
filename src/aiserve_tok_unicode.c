/*
 * aiserve tokenizer: Unicode classes through utf8proc, corrected to the
 * reference's tables (see aiserve_tok_unicode.h and the generated
 * aiserve_tok_unitab.h).
 */
#include <pthread.h>
#include <stdlib.h>
#include <utf8proc.h>

#include "aiserve_tok_unicode.h"
#include "aiserve_tok_unitab.h"


static uint8_t         aiserve_tok_bmp[0x10000];
static pthread_once_t  aiserve_tok_bmp_once = PTHREAD_ONCE_INIT;


static int
aiserve_tok_uni_cmp(const void *a, const void *b)
{
    uint32_t  x = *(const uint32_t *) a, y = *(const uint32_t *) b;

    return (x > y) - (x < y);
}


static int
aiserve_tok_uni_in(const uint32_t *set, size_t n, uint32_t c)
{
    return bsearch(&c, set, n, sizeof(uint32_t), aiserve_tok_uni_cmp) != NULL;
}


static const uint32_t *
aiserve_tok_uni_lower_entry(uint32_t c)
{
    return bsearch(&c, aiserve_tok_lower, AISERVE_TOK_N_LOWER,
                   sizeof(aiserve_tok_lower[0]), aiserve_tok_uni_cmp);
}


/*
 * CJK ranges of tokenizers/src/normalizers/bert.rs is_chinese_char (note
 * 0x2B920, where Google BERT's tokenization.py has 0x2B820).
 */
static int
aiserve_tok_uni_is_chinese(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF)
           || (c >= 0x3400 && c <= 0x4DBF)
           || (c >= 0x20000 && c <= 0x2A6DF)
           || (c >= 0x2A700 && c <= 0x2B73F)
           || (c >= 0x2B740 && c <= 0x2B81F)
           || (c >= 0x2B920 && c <= 0x2CEAF)
           || (c >= 0xF900 && c <= 0xFAFF)
           || (c >= 0x2F800 && c <= 0x2FA1F);
}


static unsigned
aiserve_tok_uni_compute(uint32_t c)
{
    unsigned                 cls = 0;
    utf8proc_category_t      cat;
    utf8proc_int32_t         d[8];
    int                      last;
    utf8proc_ssize_t         n;
    int                      ctrl, punct, mn;

    cat = utf8proc_category((utf8proc_int32_t) c);

    /* White_Space = Zs Zl Zp and U+0009..U+000D, U+0085 */
    if ((c >= 0x09 && c <= 0x0D) || c == 0x85
        || cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL
        || cat == UTF8PROC_CATEGORY_ZP)
    {
        cls |= AISERVE_TOK_U_SPACE;
    }

    /* bert.rs is_control: Cc Cf Co Cs (the crate's "other" without Cn),
     * never \t \n \r; clean_text also drops U+0000 and U+FFFD */
    ctrl = c == 0 || c == 0xFFFD
           || ((cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF
                || cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CS)
               && c != '\t' && c != '\n' && c != '\r');
    if (aiserve_tok_uni_in(aiserve_tok_ctrl_flip, AISERVE_TOK_N_CTRL_FLIP, c)) {
        ctrl = !ctrl;
    }
    if (ctrl) {
        cls |= AISERVE_TOK_U_CONTROL;
    }

    if (c < 0x80) {
        punct = (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40)
                || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
    } else {
        punct = cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
    }
    if (aiserve_tok_uni_in(aiserve_tok_punct_flip, AISERVE_TOK_N_PUNCT_FLIP,
                           c))
    {
        punct = !punct;
    }
    if (punct) {
        cls |= AISERVE_TOK_U_PUNCT;
    }

    if (aiserve_tok_uni_is_chinese(c)) {
        cls |= AISERVE_TOK_U_CHINESE;
    }

    mn = cat == UTF8PROC_CATEGORY_MN;
    if (aiserve_tok_uni_in(aiserve_tok_mn_flip, AISERVE_TOK_N_MN_FLIP, c)) {
        mn = !mn;
    }
    if (mn) {
        cls |= AISERVE_TOK_U_MN;
    }

    n = utf8proc_decompose_char((utf8proc_int32_t) c, d, 8,
                                UTF8PROC_DECOMPOSE, &last);
    if ((n != 1 || (uint32_t) d[0] != c)
        && !aiserve_tok_uni_in(aiserve_tok_nfd_keep, AISERVE_TOK_N_NFD_KEEP, c))
    {
        cls |= AISERVE_TOK_U_NFD;
    }

    if (aiserve_tok_uni_ccc(c) != 0) {
        cls |= AISERVE_TOK_U_MARK;
    }

    if (aiserve_tok_uni_lower_entry(c) != NULL
        || (uint32_t) utf8proc_tolower((utf8proc_int32_t) c) != c)
    {
        cls |= AISERVE_TOK_U_LOWER;
    }

    return cls;
}


static void
aiserve_tok_bmp_init(void)
{
    uint32_t  c;

    for (c = 0; c < 0x10000; c++) {
        aiserve_tok_bmp[c] = (uint8_t) aiserve_tok_uni_compute(c);
    }
}


const uint8_t *
aiserve_tok_uni_bmp(void)
{
    pthread_once(&aiserve_tok_bmp_once, aiserve_tok_bmp_init);

    return aiserve_tok_bmp;
}


unsigned
aiserve_tok_uni_class(uint32_t c)
{
    if (c < 0x10000) {
        pthread_once(&aiserve_tok_bmp_once, aiserve_tok_bmp_init);
        return aiserve_tok_bmp[c];
    }

    return aiserve_tok_uni_compute(c);
}


size_t
aiserve_tok_uni_nfd(uint32_t c, uint32_t *out)
{
    utf8proc_int32_t  d[8];
    int               last;
    utf8proc_ssize_t  n, i;

    if (aiserve_tok_uni_in(aiserve_tok_nfd_keep, AISERVE_TOK_N_NFD_KEEP, c)) {
        out[0] = c;
        return 1;
    }

    n = utf8proc_decompose_char((utf8proc_int32_t) c, d, 8,
                                UTF8PROC_DECOMPOSE, &last);
    if (n < 1 || n > 8) {
        out[0] = c;
        return 1;
    }

    for (i = 0; i < n; i++) {
        out[i] = (uint32_t) d[i];
    }

    return (size_t) n;
}


size_t
aiserve_tok_uni_lower(uint32_t c, uint32_t *out)
{
    const uint32_t  *e;
    size_t           n;

    e = aiserve_tok_uni_lower_entry(c);
    if (e != NULL) {
        for (n = 0; n < 3 && e[n + 1] != 0; n++) {
            out[n] = e[n + 1];
        }
        return n;
    }

    out[0] = (uint32_t) utf8proc_tolower((utf8proc_int32_t) c);
    return 1;
}


unsigned
aiserve_tok_uni_ccc(uint32_t c)
{
    const utf8proc_property_t  *p;

    p = utf8proc_get_property((utf8proc_int32_t) c);
    if (p->combining_class == 0
        || aiserve_tok_uni_in(aiserve_tok_ccc_zero, AISERVE_TOK_N_CCC_ZERO, c))
    {
        return 0;
    }

    return (unsigned) p->combining_class;
}


static int
aiserve_tok_uni_range_cmp(const void *a, const void *b)
{
    uint32_t         c = *(const uint32_t *) a;
    const uint32_t  *r = b;

    return c < r[0] ? -1 : c > r[1];
}


int
aiserve_tok_uni_is_word(uint32_t c)
{
    utf8proc_category_t  cat;
    int                  word;

    cat = utf8proc_category((utf8proc_int32_t) c);
    word = c == 0x200C || c == 0x200D
           || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_ME)
           || cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL
           || cat == UTF8PROC_CATEGORY_PC;

    /* the regex crate's tables: newer, and Alphabetic beyond L and M */
    if (bsearch(&c, aiserve_tok_word_flip, AISERVE_TOK_N_WORD_FLIP,
                sizeof(aiserve_tok_word_flip[0]), aiserve_tok_uni_range_cmp)
        != NULL)
    {
        word = !word;
    }

    return word;
}
