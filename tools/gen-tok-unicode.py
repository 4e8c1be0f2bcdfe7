#!/usr/bin/env python3
"""Derives the per-code-point behaviour of Hugging Face `tokenizers`'
BertNormalizer / BertPreTokenizer and writes

  src/aiserve_tok_unitab.h         the code points where the reference
                                   disagrees with utf8proc's tables
  t/data/tokenizer/unicode-ref.txt.gz
                                   the reference behaviour of every code
                                   point (runs of equal behaviour merged),
                                   checked exhaustively by t/unit/test_tokenizer.c

Why: the reference classifies control characters, punctuation and nonspacing
marks with the `unicode_categories` crate (old Unicode tables), and lowercases
with Rust's std tables (newer than utf8proc 2.8's Unicode 15).  aiserve uses
utf8proc and corrects it with these small exception lists.

Usage: .venv/bin/python tools/gen-tok-unicode.py   (needs `tokenizers`)
"""
import ctypes
import ctypes.util
import gzip
import os
import sys

import tokenizers
from tokenizers import normalizers, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
u8 = ctypes.CDLL(ctypes.util.find_library("utf8proc") or "libutf8proc.so.2")
u8.utf8proc_category.restype = ctypes.c_int
u8.utf8proc_tolower.restype = ctypes.c_int32
u8.utf8proc_version.restype = ctypes.c_char_p
u8.utf8proc_unicode_version.restype = ctypes.c_char_p

CN, MN, PC, PO, ZS, ZP, CC, CF, CS, CO = 0, 6, 12, 18, 23, 25, 26, 27, 28, 29


class _Prop(ctypes.Structure):
    _fields_ = [("category", ctypes.c_int16),
                ("combining_class", ctypes.c_int16)]


u8.utf8proc_get_property.restype = ctypes.POINTER(_Prop)


def ccc(c):
    return u8.utf8proc_get_property(ctypes.c_int32(c)).contents.combining_class


def cat(c):
    return u8.utf8proc_category(ctypes.c_int32(c))


def u8_ws(c):
    return 9 <= c <= 13 or c == 0x85 or ZS <= cat(c) <= ZP


def u8_ctrl(c):
    if c in (9, 10, 13):
        return False
    return c == 0 or c == 0xFFFD or cat(c) in (CC, CF, CS, CO)


def u8_punct(c):
    if c < 128:
        return chr(c) in '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'
    return PC <= cat(c) <= PO


def u8_word(c):
    """\\w of Rust's regex crate from utf8proc's categories: L* M* Nd Nl Pc
    and the joiners"""
    if c in (0x200C, 0x200D):
        return True
    k = cat(c)
    return 1 <= k <= 8 or k in (9, 10, 12)


def word_chars():
    """the code points the reference's single_word test (regex \\w) takes
    for word characters, probed through an added token"""
    from tokenizers import Tokenizer, AddedToken, models
    t = Tokenizer(models.WordPiece({"[UNK]": 0, "<q>": 1}, unk_token="[UNK]"))
    t.add_tokens([AddedToken("<q>", normalized=False, single_word=True)])
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    words = set()
    for i in range(0, len(cps), 50000):
        part = cps[i:i + 50000]
        for c, e in zip(part, t.encode_batch(["<q>" + chr(c) for c in part],
                                             add_special_tokens=False)):
            if e.ids[0] != 1:
                words.add(c)
    return words


def u8_nfd(c):
    buf = (ctypes.c_int32 * 32)()
    last = ctypes.c_int()
    n = u8.utf8proc_decompose_char(ctypes.c_int32(c), buf, 32, 1 << 3,
                                   ctypes.byref(last))  # UTF8PROC_DECOMPOSE
    return [buf[i] for i in range(n)]


def main():
    N = normalizers.BertNormalizer
    clean = N(clean_text=True, handle_chinese_chars=False,
              strip_accents=False, lowercase=False)
    chin = N(clean_text=False, handle_chinese_chars=True,
             strip_accents=False, lowercase=False)
    low = N(clean_text=False, handle_chinese_chars=False,
            strip_accents=False, lowercase=True)
    strip = N(clean_text=False, handle_chinese_chars=False,
              strip_accents=True, lowercase=False)
    pt = pre_tokenizers.BertPreTokenizer()

    words = word_chars()
    ctrl_flip, punct_flip, mn_flip, lower, word_flip = [], [], [], [], []
    rows = []
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        ch = chr(c)
        a = clean.normalize_str(ch)
        r_ctrl = a == ''
        r_ws = a == ' ' and c != 0x20 or c == 0x20
        p = pt.pre_tokenize_str('a' + ch + 'a')
        r_split = len(p) == 2
        r_punct = len(p) == 3
        r_chin = chin.normalize_str(ch) != ch
        lo = [ord(x) for x in low.normalize_str(ch)]
        st = [ord(x) for x in strip.normalize_str(ch)]

        if r_ctrl != u8_ctrl(c):
            ctrl_flip.append(c)
        if not r_split and r_punct != u8_punct(c):
            punct_flip.append(c)
        if r_split != u8_ws(c) or (r_ws and not r_ctrl) != (u8_ws(c) and not r_ctrl and c not in (0x20,)) and c != 0x20:
            sys.exit("whitespace differs at U+%04X: extend the generator" % c)
        d = u8_nfd(c)
        if d == [c] and (st == []) != (cat(c) == MN):
            mn_flip.append(c)
        ul = u8.utf8proc_tolower(ctypes.c_int32(c))
        if lo != [ul]:
            lower.append((c, lo))

        r_word = c in words
        if r_word != u8_word(c):
            word_flip.append(c)

        flags = ''.join(f for f, on in (('X', r_ctrl), ('W', r_ws and not r_ctrl),
                                        ('H', r_chin), ('S', r_split),
                                        ('P', r_punct), ('w', r_word)) if on)
        lo_s = '' if lo == [c] else ' '.join('%X' % x for x in lo)
        st_s = '' if st == [c] else (' '.join('%X' % x for x in st) or '-')
        rows.append((c, flags, lo_s, st_s))

    # the reference's NFD must agree with utf8proc's once the marks agree,
    # except for characters its older tables do not decompose (nfd_keep)
    flip = set(mn_flip)
    nfd_keep = []
    for c, _, _, st_s in rows:
        want = [] if st_s == '-' else ([c] if st_s == '' else
                                       [int(x, 16) for x in st_s.split()])
        got = [x for x in u8_nfd(c) if (cat(x) == MN) == (x in flip)]
        if got != want and want == [c]:
            nfd_keep.append(c)
        elif got != want:
            sys.exit("NFD differs at U+%04X: %s vs %s" % (c, got, want))

    # canonical ordering: the reference's NFD reorders marks by its own
    # (older) combining classes; find the marks it treats as starters by
    # probing with U+1D165 (ccc 216) and U+1D16D (ccc 226), which it keeps
    lo_p, hi_p = chr(0x1D165), chr(0x1D16D)
    ccc_zero = []
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000 or ccc(c) == 0:
            continue
        x, ch = ccc(c), chr(c)
        if strip.normalize_str(ch) == '':
            out = strip.normalize_str('a' + hi_p + ch + lo_p)
            nonzero = out == 'a' + lo_p + hi_p
        elif x > 216:
            nonzero = strip.normalize_str('a' + ch + lo_p) == 'a' + lo_p + ch
        elif x < 216:
            nonzero = strip.normalize_str('a' + lo_p + ch) == 'a' + ch + lo_p
        else:
            nonzero = strip.normalize_str('a' + hi_p + ch) == 'a' + ch + hi_p
        if not nonzero:
            ccc_zero.append(c)

    write_header(ctrl_flip, punct_flip, mn_flip, nfd_keep, ccc_zero,
                 word_flip, lower)
    write_dump(rows)


def c_array(decl, items):
    """a C initializer, items wrapped at 78 columns"""
    out = [decl + " = {"]
    line = "   "
    for item in items:
        if len(line) + len(item) > 78:
            out.append(line)
            line = "   "
        line += item
    out.append(line)
    out.append("};")
    return "\n".join(out)


def carr(name, cps):
    cps = cps or [0x110000]
    return c_array("static const uint32_t %s[%d]" % (name, len(cps)),
                   [" 0x%05X," % c for c in cps])


def ranges(cps):
    out = []
    for c in cps:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def crange(name, cps):
    rs = ranges(cps) or [[0x110000, 0x110000]]
    return c_array("static const uint32_t %s[%d][2]" % (name, len(rs)),
                   [" { 0x%05X, 0x%05X }," % (a, b) for a, b in rs])


def write_header(ctrl_flip, punct_flip, mn_flip, nfd_keep, ccc_zero,
                 word_flip, lower):
    path = os.path.join(ROOT, "src", "aiserve_tok_unitab.h")
    with open(path, "w") as f:
        f.write("""/*
 * GENERATED by tools/gen-tok-unicode.py from Hugging Face tokenizers %s
 * and utf8proc %s (Unicode %s).  Do not edit.
 *
 * Code points where the reference disagrees with utf8proc's tables.  The
 * reference (tokenizers/src/normalizers/bert.rs, pre_tokenizers/bert.rs)
 * tests control characters (Cc Cf Co Cs), punctuation (P*) and nonspacing
 * marks (Mn) with the `unicode_categories` crate, whose tables are older
 * than utf8proc's, and lowercases with Rust's char::to_lowercase (full
 * mappings, newer tables); its NFD (unicode-normalization-alignments)
 * lacks a few decompositions and combining classes; the regex crate's \\w
 * (added tokens' single_word) follows newer tables.  Each *_flip list
 * inverts utf8proc's answer.
 */
#ifndef AISERVE_TOK_UNITAB_H
#define AISERVE_TOK_UNITAB_H

#include <stdint.h>

#define AISERVE_TOK_N_CTRL_FLIP   %d
#define AISERVE_TOK_N_PUNCT_FLIP  %d
#define AISERVE_TOK_N_MN_FLIP     %d
#define AISERVE_TOK_N_NFD_KEEP    %d
#define AISERVE_TOK_N_CCC_ZERO    %d
#define AISERVE_TOK_N_WORD_FLIP   %d   /* ranges */
#define AISERVE_TOK_N_LOWER       %d

""" % (tokenizers.__version__, u8.utf8proc_version().decode(),
       u8.utf8proc_unicode_version().decode(), len(ctrl_flip),
       len(punct_flip), len(mn_flip), len(nfd_keep), len(ccc_zero),
       len(ranges(word_flip)), len(lower)))
        f.write(carr("aiserve_tok_ctrl_flip", ctrl_flip) + "\n\n")
        f.write(carr("aiserve_tok_punct_flip", punct_flip) + "\n\n")
        f.write(carr("aiserve_tok_mn_flip", mn_flip) + "\n\n")
        f.write("/* utf8proc decomposes these, the reference leaves them */\n")
        f.write(carr("aiserve_tok_nfd_keep", nfd_keep) + "\n\n")
        f.write("/* marks the reference's canonical ordering takes for "
                "starters (ccc 0) */\n")
        f.write(carr("aiserve_tok_ccc_zero", ccc_zero) + "\n\n")
        f.write("/* \\w of the regex crate (added tokens' single_word): "
                "ranges [first, last] */\n")
        f.write(crange("aiserve_tok_word_flip", word_flip) + "\n\n")
        f.write("/* code point, then its lowercase (up to 3; 0 ends) */\n")
        f.write("static const uint32_t aiserve_tok_lower[%d][4] = {\n"
                % len(lower))
        for c, lo in lower:
            lo = lo + [0] * (3 - len(lo))
            f.write("    { 0x%05X, 0x%05X, 0x%05X, 0x%05X },\n"
                    % (c, lo[0], lo[1], lo[2]))
        f.write("};\n\n#endif /* AISERVE_TOK_UNITAB_H */\n")
    print("wrote %s: %d ctrl, %d punct, %d mn, %d nfd, %d ccc, %d lower"
          % (path, len(ctrl_flip), len(punct_flip), len(mn_flip),
             len(nfd_keep), len(ccc_zero), len(lower)))


def write_dump(rows):
    """One line per run: FIRST[-LAST] TAB flags TAB lowercase TAB stripped.
    flags: X removed by clean_text, W whitespace for clean_text, H CJK
    ideograph, S pre-tokenizer whitespace, P pre-tokenizer punctuation,
    w a word character (\\w) for added tokens' single_word.
    lowercase / stripped: hex code points, empty = unchanged, '-' = removed.
    Runs merge consecutive code points with only flags and no mapping."""
    path = os.path.join(ROOT, "t", "data", "tokenizer", "unicode-ref.txt.gz")
    out = []
    run = None
    prev = -2
    for c, flags, lo, st in rows:
        simple = lo == '' and st == ''
        if simple and run and run[2] == flags and c == prev + 1:
            run[1] = c
        else:
            if run:
                out.append(run)
            run = [c, c, flags, lo, st] if simple else None
            if not simple:
                out.append([c, c, flags, lo, st])
        prev = c
    if run:
        out.append(run)
    with gzip.GzipFile(path, "wb", 9, mtime=0) as f:
        f.write(("# tokenizers %s, generated by tools/gen-tok-unicode.py\n"
                 % tokenizers.__version__).encode())
        for a, b, flags, lo, st in out:
            if not (flags or lo or st):
                continue
            rng = "%X" % a if a == b else "%X-%X" % (a, b)
            f.write(("%s\t%s\t%s\t%s\n" % (rng, flags, lo, st)).encode())
    print("wrote %s: %d lines" % (path, len(out)))


if __name__ == "__main__":
    main()
