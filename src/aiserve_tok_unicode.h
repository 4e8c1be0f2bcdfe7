/*
 * aiserve tokenizer: per-code-point Unicode classes as Hugging Face
 * `tokenizers` (BertNormalizer, BertPreTokenizer) sees them.  utf8proc
 * supplies categories, canonical decompositions and case mappings; the
 * generated src/aiserve_tok_unitab.h corrects it where the reference uses
 * other (older or newer) tables.  Internal to the tokenizer.
 */
#ifndef AISERVE_TOK_UNICODE_H
#define AISERVE_TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* class bits of one code point */
#define AISERVE_TOK_U_CONTROL   0x01   /* removed by clean_text */
#define AISERVE_TOK_U_SPACE     0x02   /* White_Space (\t \n \r count) */
#define AISERVE_TOK_U_PUNCT     0x04   /* split off by BertPreTokenizer */
#define AISERVE_TOK_U_CHINESE   0x08   /* padded by handle_chinese_chars */
#define AISERVE_TOK_U_MN        0x10   /* removed by strip_accents */
#define AISERVE_TOK_U_NFD       0x20   /* has a canonical decomposition */
#define AISERVE_TOK_U_LOWER     0x40   /* lowercase differs from itself */
#define AISERVE_TOK_U_MARK      0x80   /* canonical combining class > 0 */

/*
 * Class bits of code point c (< 0x110000).  Follows
 * tokenizers/src/normalizers/bert.rs (is_control: Cc Cf Co Cs except
 * \t \n \r, plus U+0000 and U+FFFD which clean_text also drops;
 * is_chinese_char: its CJK ranges, which differ from Google BERT's in
 * starting the Extension C..F block at U+2B920) and
 * tokenizers/src/pre_tokenizers/bert.rs (is_bert_punc: ASCII punctuation,
 * which includes $ + < = > ^ ` | ~, or Unicode P*).
 */
unsigned aiserve_tok_uni_class(uint32_t c);

/* the class bits of U+0000..U+FFFF, 65,536 entries, computed once */
const uint8_t *aiserve_tok_uni_bmp(void);

/*
 * Canonical decomposition (NFD) of c into out (room for 8 code points);
 * returns the count (1 and out[0] == c when there is none).
 */
size_t aiserve_tok_uni_nfd(uint32_t c, uint32_t *out);

/*
 * Full lowercase mapping of c as Rust's char::to_lowercase (which
 * tokenizers' NormalizedString::lowercase applies char by char, so no
 * final-sigma rule): U+0130 becomes "i\u0307".  Writes up to 3 code points
 * to out and returns the count.
 */
size_t aiserve_tok_uni_lower(uint32_t c, uint32_t *out);

/*
 * Canonical combining class of c as the reference's NFD
 * (unicode-normalization-alignments) knows it: utf8proc's, except marks
 * newer than its tables, which it orders as starters (0).
 */
unsigned aiserve_tok_uni_ccc(uint32_t c);

/* \w of Rust's regex crate (used by added tokens' single_word) */
int aiserve_tok_uni_is_word(uint32_t c);

#endif /* AISERVE_TOK_UNICODE_H */
