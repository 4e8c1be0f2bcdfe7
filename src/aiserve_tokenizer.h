/*
 * aiserve tokenizer: BERT WordPiece, identical to Hugging Face `tokenizers`
 * driven by a model's tokenizer.json (BertNormalizer, BertPreTokenizer,
 * WordPiece, TemplateProcessing / BertProcessing).
 *
 * No nginx types.  A loaded tokenizer is read-only and may be used from
 * several threads at once.
 */
#ifndef AISERVE_TOKENIZER_H
#define AISERVE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct aiserve_tok_s  aiserve_tok_t;

typedef enum {
    AISERVE_TRUNCATE_RIGHT = 0,
    AISERVE_TRUNCATE_LEFT
} aiserve_truncate_direction_e;

typedef struct {
    /* 0: use the truncation of tokenizer.json (none if null there);
     * > 0: truncate to this many tokens, special tokens included
     * (longest_first for pairs). */
    size_t                        max_length;
    /* 1: truncate to max_length; 0: never truncate (n_tokens may exceed
     * max_length, the caller decides, e.g. 422). */
    int                           truncation;
    aiserve_truncate_direction_e  direction;
    /* 1 (default when the struct is zeroed by aiserve_tok_opts_default):
     * add [CLS]/[SEP] per the post-processor. */
    int                           add_special_tokens;
} aiserve_tok_opts_t;

/* Result of one encode.  All arrays have n_tokens entries (offsets: 2 per
 * token), allocated with malloc; release with aiserve_encoding_free(). */
typedef struct {
    int32_t   *input_ids;
    int32_t   *token_type_ids;
    uint8_t   *special_tokens_mask;   /* 1 for template/special tokens */
    int8_t    *sequence_ids;          /* 0, 1, or -1 for special tokens */
    /* [start, end) in Unicode code points of the ORIGINAL text of the
     * token's sequence (text or pair); (0, 0) for special tokens. */
    uint32_t  *offsets;
    /* the same in bytes of the original UTF-8 text */
    uint32_t  *byte_offsets;
    size_t     n_tokens;
    /* token count, special tokens included, before truncation */
    size_t     n_tokens_untruncated;
} aiserve_encoding_t;

/*
 * Loads MODEL_DIR/tokenizer.json, or falls back to vocab.txt +
 * tokenizer_config.json.  Returns NULL on error with a message naming the
 * file (and the unsupported model type: BPE, Unigram, ...) in err.
 *
 * tokenizer.json: model WordPiece (vocab, unk_token,
 * continuing_subword_prefix, max_input_chars_per_word), normalizer
 * BertNormalizer or null, pre_tokenizer BertPreTokenizer or null,
 * post_processor TemplateProcessing, BertProcessing or null, added_tokens
 * (raw or normalized, lstrip, rstrip, single_word), truncation
 * (max_length, strategy).  Padding and the decoder are ignored.  Other
 * component types are load errors that name them.
 * vocab.txt: one token per line, id = line number; tokenizer_config.json
 * (optional) gives do_lower_case, tokenize_chinese_chars, strip_accents and
 * the special tokens, as transformers' BertTokenizer reads them.
 * Follows tokenizers/src/tokenizer/serialization.rs and transformers'
 * models/bert/tokenization_bert.py.
 */
aiserve_tok_t *aiserve_tok_load(const char *model_dir, char *err,
    size_t err_len);
void aiserve_tok_free(aiserve_tok_t *tok);

void aiserve_tok_opts_default(aiserve_tok_opts_t *opts);

/*
 * Encodes text (len bytes of UTF-8, NUL bytes allowed inside) and, when
 * pair != NULL, the second sequence of a pair.  Returns 0, or -1 with err
 * set, e.g. "invalid UTF-8 at byte 17" (byte index within the offending
 * sequence; for a pair the message says "text_pair").  Linear time.
 *
 * The result equals Hugging Face tokenizers' Tokenizer.encode(text, pair,
 * add_special_tokens) with the same truncation and no padding: ids, type
 * ids, and offsets (Python's code point offsets; bytes as the Rust API).
 * opts NULL means aiserve_tok_opts_default().  Truncation follows
 * utils/truncation.rs: max_length counts the special tokens, pairs are cut
 * longest_first (or tokenizer.json's only_first / only_second), direction
 * is opts->direction.  Other errors: "max_length N is less than the M
 * special tokens", only_second without a pair, "sequence too short",
 * "out of memory" (out is then empty; nothing to free).
 */
int aiserve_tok_encode(const aiserve_tok_t *tok, const char *text,
    size_t len, const char *pair, size_t pair_len,
    const aiserve_tok_opts_t *opts, aiserve_encoding_t *out, char *err,
    size_t err_len);
void aiserve_encoding_free(aiserve_encoding_t *enc);

/* Vocabulary access: token string of an id (NUL-terminated, owned by the
 * tokenizer) or NULL; id of a token or -1 (added tokens included).
 * vocab_size counts the vocabulary plus added tokens outside it, as
 * tokenizers' get_vocab_size(with_added_tokens=True). */
const char *aiserve_tok_id_to_token(const aiserve_tok_t *tok, int32_t id);
int32_t aiserve_tok_token_to_id(const aiserve_tok_t *tok, const char *token);
size_t aiserve_tok_vocab_size(const aiserve_tok_t *tok);
/*
 * Decodes n token ids to UTF-8 text as tokenizers' Tokenizer.decode(ids,
 * skip_special_tokens): ids without a token are dropped, special tokens
 * (added tokens with special=true) too when skip_special_tokens, then the
 * decoder of tokenizer.json runs: BERT's WordPiece (prefix "##", cleanup)
 * or none (tokens joined with spaces).  *out is malloc'ed and NUL-terminated
 * (*out_len bytes, NUL excluded); the caller frees it.  Returns 0, or -1
 * with err set (another decoder type, out of memory).
 */
int aiserve_tok_decode(const aiserve_tok_t *tok, const int32_t *ids,
    size_t n, int skip_special_tokens, char **out, size_t *out_len,
    char *err, size_t err_len);

/* tokenizer.json's truncation max_length, or 0 if none */
size_t aiserve_tok_model_max_length(const aiserve_tok_t *tok);

#endif /* AISERVE_TOKENIZER_H */
