#!/usr/bin/env python3
"""Builds the tokenizer parity corpus and writes Hugging Face `tokenizers`'
answers for it, for t/unit/test_tokenizer_parity.c and
t/unit/test_tokenizer.c.  The test suite reads only the files written here;
it needs no Python.

Corpus (t/data/tokenizer/corpus.jsonl.gz, one JSON string per line):
  * translations from the gettext catalogs (.mo) that Debian packages install
    under /usr/share/locale (French, German, Turkish, Vietnamese, Greek,
    Russian, Ukrainian, Chinese, Japanese, Korean, ...; English msgids);
    the packages are listed in t/data/tokenizer/SOURCES
  * words from the Debian word lists wamerican, wfrench, wngerman
    (/usr/share/dict), also glued into words of 99-101 and 130+ code points
  * generated lines: emoji and ZWJ sequences, control and zero-width
    characters, soft hyphens, every Unicode White_Space character, digit and
    punctuation runs, combining sequences, CJK extension blocks and
    compatibility ideographs, special tokens inside text, NUL bytes, and the
    code points where the reference's Unicode tables differ from utf8proc's

Vocabularies (DIR: reference):
  uncased  models/all-MiniLM-L6-v2 (tokenizer.json): Tokenizer.from_file
  cased    t/data/tokenizers/bert-base-cased (vocab.txt + tokenizer_config.json)
  chinese  t/data/tokenizers/bert-base-chinese (vocab.txt + config)
The two vocab.txt directories are loaded with transformers' AutoTokenizer,
whose backend tokenizer is the reference for aiserve's vocab.txt fallback.

Goldens (t/data/tokenizer/golden-VOCAB-MODE.txt.gz), one line per corpus
line, MODE single (the line) or pair (the line, then the next line):
  IDS;TYPE_IDS;OFFSETS   space-separated ids, type ids as digits, offsets
                         as "start end" pairs in code points
golden-VOCAB-trunc.txt.gz: LINE PAIR_LINE(-1) MAX_LENGTH DIR;IDS;TYPES;OFFS
golden-added-single.txt.gz: LINE;IDS;TYPES;OFFS for the uncased tokenizer
                         with added tokens (ADDED)
golden-fallback-added-single.txt.gz: the same for bert-base-chinese-added
                         (vocab.txt + added_tokens_decoder)
golden-variant-NAME.txt.gz: LINE MODE;IDS;TYPES;OFFS (or LINE MODE;ERROR) for
                         MiniLM's tokenizer.json patched as VARIANTS says
t/data/tokenizer/cases.jsonl: the named cases of shared/cases/tokenizer.jsonl.

Usage: .venv/bin/python tools/gen-tokenizer-goldens.py [--lines-only]
"""
import gettext
import glob
import gzip
import json
import os
import random
import subprocess
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "t", "data", "tokenizer")

VOCABS = [
    ("uncased", "models/all-MiniLM-L6-v2"),
    ("cased", "t/data/tokenizers/bert-base-cased"),
    ("chinese", "t/data/tokenizers/bert-base-chinese"),
]

LANGS = ["fr", "de", "tr", "vi", "el", "ru", "uk", "zh_CN", "zh_TW", "ja",
         "ko", "pl", "cs", "es", "pt_BR", "ar", "he", "hi", "th", "ka"]
PER_LANG = 260
ENGLISH = 500
DICTS = ["/usr/share/dict/american-english", "/usr/share/dict/french",
         "/usr/share/dict/ngerman"]


def load_reference(d):
    from tokenizers import Tokenizer
    path = os.path.join(ROOT, d)
    if os.path.exists(os.path.join(path, "tokenizer.json")):
        t = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    else:
        from transformers import AutoTokenizer
        t = AutoTokenizer.from_pretrained(path).backend_tokenizer
    t.no_padding()
    t.no_truncation()
    return t


def catalogs():
    out = []
    for lang in LANGS:
        out += sorted(glob.glob("/usr/share/locale/%s/LC_MESSAGES/*.mo" % lang))
    return out


def mo_strings(path):
    with open(path, "rb") as f:
        try:
            cat = gettext.GNUTranslations(f)._catalog
        except Exception:
            return [], []
    ids, strs = [], []
    for k, v in cat.items():
        if isinstance(k, tuple):
            k = k[0]
        if not k or not v:
            continue
        ids.append(k)
        strs.append(v)
    return ids, strs


def corpus_from_catalogs(rng, used):
    lines = []
    english = []
    for lang in LANGS:
        pool = []
        for p in sorted(glob.glob("/usr/share/locale/%s/LC_MESSAGES/*.mo"
                                  % lang)):
            ids, strs = mo_strings(p)
            if strs:
                used.add(p)
            pool += [(s, p) for s in strs]
            english += ids
        pool = sorted(set(s for s, _ in pool))
        rng.shuffle(pool)
        lines += pool[:PER_LANG]
    english = sorted(set(english))
    rng.shuffle(english)
    return lines + english[:ENGLISH]


def corpus_from_dicts(rng, used):
    lines = []
    for p in DICTS:
        if not os.path.exists(p):
            sys.exit("%s missing: apt-get install wamerican wfrench wngerman"
                     % p)
        used.add(p)
        with open(p, encoding="utf-8", errors="replace") as f:
            words = [w.strip() for w in f if w.strip()]
        rng.shuffle(words)
        for i in range(0, 1600, 16):
            lines.append(" ".join(words[i:i + 16]))
        # very long words around max_input_chars_per_word (100)
        for target in (99, 100, 101, 130, 300):
            w = ""
            for x in words[2000 + target:]:
                w += x.replace("'", "")
                if len(w) >= target:
                    break
            lines.append(w[:target])
            lines.append(w[:target].upper() + " end")
    return lines


WHITESPACE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + \
    list(range(0x2000, 0x200B)) + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
                                   0x180E, 0x200B, 0xFEFF]
ZERO_WIDTH = [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x034F,
              0x061C, 0x200E, 0x200F, 0x202A, 0x202E, 0x2066, 0x2069]
CONTROLS = list(range(0x00, 0x20)) + [0x7F] + list(range(0x80, 0xA0))
EMOJI = ["\U0001F4A9", "\U0001F601", "\U0001F44D\U0001F3FD",
         "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",
         "\U0001F3F3\uFE0F\u200D\U0001F308", "\u2764\uFE0F",
         "\U0001F1EB\U0001F1F7", "\U0001F9D1\u200D\U0001F4BB", "\u263A",
         "\U0001F970", "\U0001FAE0", "#\uFE0F\u20E3", "\U0001F600\U0001F603",
         "\u2639\uFE0F", "\U0001F926\U0001F3FC\u200D\u2642\uFE0F"]
SPECIALS = ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[sep]", "[SEP",
            "[[SEP]]", "x[MASK]y"]


def differing_code_points():
    """the code points of the generated exception tables"""
    cps = []
    path = os.path.join(ROOT, "src", "aiserve_tok_unitab.h")
    import re
    with open(path) as f:
        for m in re.finditer(r"0x([0-9A-F]{5})", f.read()):
            c = int(m.group(1), 16)
            if c < 0x110000 and not 0xD800 <= c < 0xE000:
                cps.append(c)
    return sorted(set(cps))


def corpus_generated(rng):
    lines = []
    words = ["hello", "Hello", "naïve", "café", "Straße", "İstanbul",
             "ıi", "Ǆemal", "Ωμέγα", "ПРИВЕТ", "北京", "日本語", "한국어",
             "Việt", "ﬁnance", "Ⅻ", "①", "x²", "e\u0301", "a\u0308\u0301",
             "\u1100\u1161\u11A8", "ΆΈΉ", "ǅ", "ß", "ẞ", "ŉ", "Ω", "K", "Å"]
    for c in WHITESPACE:
        lines.append("word%sword %s%s end" % (chr(c), chr(c), chr(c)))
    lines.append("".join(chr(c) for c in WHITESPACE) + "x")
    for c in ZERO_WIDTH:
        lines.append("zero%swidth %s alone %sTe\u00adst" % (chr(c), chr(c),
                                                          chr(c)))
    for i in range(0, len(CONTROLS), 4):
        lines.append("ctl" + "".join(chr(c) for c in CONTROLS[i:i + 4])
                     + "x " + chr(CONTROLS[i]) + " y")
    lines.append("".join(chr(c) for c in CONTROLS))
    lines.append("\x00")
    lines.append("nul\x00inside\x00 text \x00")
    lines.append("soft\u00adhyphen \u00ad \u00ad\u00ad Te\u00adst")
    for e in EMOJI:
        lines.append("%s %s%s x%sy %s!" % (e, e, e, e, e))
    lines.append(" ".join(EMOJI))
    for s in SPECIALS:
        lines.append("a %s b%sc %s" % (s, s, s.lower()))
    lines.append("[CLS][SEP][MASK] [UNK]")
    for n in (1, 5, 30, 120):
        lines.append("1234567890" * n)
        lines.append("!?.,;:" * n)
        lines.append("-" * (n * 3) + "=" * n + "..." * n)
    lines.append("3.14159 1,000,000 10^9 $5.00 50% 1/2 #tag @user a_b")
    lines.append("".join(chr(c) for c in range(0x21, 0x7F)))
    # chinese ranges, their edges and compatibility ideographs
    for lo, hi in [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                   (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
                   (0x2B820, 0x2B91F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF),
                   (0x2F800, 0x2FA1F), (0x2CEB0, 0x2EBEF), (0x30000, 0x3134F)]:
        cs = [lo, lo + 1, hi - 1, hi] + [rng.randint(lo, hi)
                                         for _ in range(12)]
        lines.append("".join(chr(c) for c in cs) + " x" + chr(lo) + "y")
    # unicode soup: random code points from interesting blocks
    blocks = [(0x80, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF),
              (0x1E00, 0x1FFF), (0x2000, 0x2BFF), (0x3000, 0x30FF),
              (0xAC00, 0xD7A3), (0xFB00, 0xFFFD), (0x10000, 0x1FAFF),
              (0xE0000, 0xE007F)]
    for i in range(300):
        lo, hi = blocks[i % len(blocks)]
        n = rng.randint(1, 40)
        s = ""
        for _ in range(n):
            c = rng.randint(lo, hi)
            if 0xD800 <= c < 0xE000:
                continue
            s += chr(c)
            if rng.random() < 0.2:
                s += rng.choice([" ", "", "-", ".", "\t"])
        lines.append(s)
    # every code point where the reference's tables differ from utf8proc's
    diff = differing_code_points()
    for i in range(0, len(diff), 12):
        chunk = diff[i:i + 12]
        lines.append(" ".join("a" + chr(c) + "b" for c in chunk))
        lines.append("".join(chr(c) for c in chunk).upper())
    # singleton canonical decompositions outside the CJK compatibility
    # blocks (U+1FEF -> '`' turns into punctuation, U+2126 -> Omega, ...)
    single = [c for c in range(0x110000)
              if not 0xF900 <= c <= 0xFAFF and not 0x2F800 <= c <= 0x2FA1F
              and unicodedata.decomposition(chr(c))
              and not unicodedata.decomposition(chr(c)).startswith("<")
              and len(unicodedata.decomposition(chr(c)).split()) == 1]
    for i in range(0, len(single), 10):
        lines.append(" ".join("a" + chr(c) + "B" + chr(c)
                              for c in single[i:i + 10]))
    # combining sequences and case pairs, cased/uncased
    for i in range(200):
        w = rng.sample(words, 4)
        s = " ".join(w)
        if i % 3 == 0:
            s = s.upper()
        if i % 5 == 0:
            s = unicodedata.normalize("NFD", s)
        if i % 7 == 0:
            s = unicodedata.normalize("NFKC", s)
        lines.append(s + rng.choice(["", "!", "?!", " ...", "\u3002"]))
    # runs of combining marks out of canonical order: kept (Mc, marks newer
    # than the reference's tables) and stripped (Mn) ones of many classes,
    # some split by control characters that clean_text removes first
    marks = ([0x1D165, 0x1D166, 0x1D167, 0x1D16D, 0x1D16E, 0x1D172, 0x07FD,
              0x0898, 0x089C, 0x0C3C, 0x0D3B, 0x1ABF, 0x1AC1, 0x1DF6, 0x16FF0,
              0x0F39, 0x302A, 0x302F, 0x0E38, 0x0E48, 0x0F71, 0x0F72, 0x0F80,
              0x05B0, 0x05BC, 0x05C1, 0x064B, 0x0651, 0x0670, 0x0300, 0x0301,
              0x0316, 0x031B, 0x0323, 0x0334, 0x0345, 0x035C, 0x0360, 0x1DCE,
              0x20D2, 0x20E3, 0x034F, 0x0488])
    bases = "aeoxYZİßǕ한ア北" + "\u0915\u05D0\u0627\u0E01\u0F40"
    for i in range(240):
        words_ = []
        for _ in range(rng.randint(1, 4)):
            w = rng.choice(bases)
            for _ in range(rng.randint(1, 6)):
                w += chr(rng.choice(marks))
                if rng.random() < 0.1:
                    w += rng.choice(["\x01", "\u200b", "\x00", "\u00ad"])
            if rng.random() < 0.4:
                w += rng.choice(bases) + "b"
            words_.append(w)
        lines.append(" ".join(words_))
    # added tokens of the "added" tokenizer (ADDED below) in context
    pieces = ["Hello World", "hello  world", "NEW YORK", "new-york",
              "Naïve", "NAIVE", "naïveté", "unaffable", "Unaffableness",
              "ß", "SS", "北京", "北京人", "[custom]", "[CUSTOM]x", "<lx>",
              "  <lx>", "<rx>  ", "a<rx>", "<rx>b", "<raw>", "x<raw>",
              "<raw>y", "  Σ  ", "ΣΣ", "Σ", "[SEP]", "[MASK]", "\u00adhello",
              "[E1]", "HELLO WORLD", "  [MASK]"]
    lines += ["<rx>\u2028\u03a3 x", "<rx>  \u03a3  \u03a3", "a <lx>  \u03a3b",
              "hello world  \u03a3<rx>  <lx>", "x<raw> <raw> <raw>y <raw>"]
    for i in range(60):
        lines.append(" ".join(rng.choice(pieces) for _ in range(5))
                     if i % 2 else
                     "".join(rng.choice(pieces) for _ in range(4)))
    lines.append("ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ σς Σ")
    lines.append("ÇOCUK ŞANLIURFA'DAN GELENLERİ ÖĞÜN OLARAK YİYOR")
    lines.append("Tiếng Việt có dấu: Đường phố Hà Nội")
    return lines


def build_corpus():
    rng = random.Random(20261130)
    used = set()
    lines = corpus_from_catalogs(rng, used)
    lines += corpus_from_dicts(rng, used)
    lines += corpus_generated(rng)
    # no line may be empty in the file format; "" is a named case
    lines = [s for s in lines if s]
    return lines, sorted(used)


def write_sources(used):
    pkgs = {}
    for i in range(0, len(used), 200):
        out = subprocess.run(["dpkg", "-S"] + used[i:i + 200],
                             capture_output=True, text=True).stdout
        for row in out.splitlines():
            pkg, _, path = row.partition(": ")
            for p in pkg.split(", "):
                pkgs.setdefault(p.split(":")[0], 0)
                pkgs[p.split(":")[0]] += 1
    with open(os.path.join(DATA, "SOURCES"), "w") as f:
        f.write("# Debian packages whose files the tokenizer corpus was "
                "built from\n# (tools/gen-tokenizer-goldens.py), with the "
                "number of files used\n")
        for p in sorted(pkgs):
            f.write("%s\t%d\n" % (p, pkgs[p]))


def fmt(e):
    return "%s;%s;%s" % (" ".join(map(str, e.ids)),
                         "".join(map(str, e.type_ids)),
                         " ".join("%d %d" % o for o in e.offsets))


def write_gz(name, rows):
    with gzip.GzipFile(os.path.join(DATA, name), "wb", 9, mtime=0) as f:
        for r in rows:
            f.write((r + "\n").encode("utf-8"))


TRUNC_LENGTHS = (5, 8, 13, 32)

# Added tokens of the "added" tokenizer: MiniLM's tokenizer.json with these
# (normalized ones matched after normalization, raw ones before, with
# lstrip / rstrip / single_word).  The test rebuilds it from
# added-tokens.json, the final added_tokens array written here.
ADDED = [("hello world", {}), ("New York", {}), ("Naïve", {}),
         ("unaffable", {}), ("ß", {}), ("北京", {}), ("[custom]", {}),
         ("<lx>", {"lstrip": True}),
         ("<rx>", {"rstrip": True, "single_word": True}),
         ("<raw>", {"normalized": False, "single_word": True}),
         ("Σ", {"normalized": False, "lstrip": True, "rstrip": True})]


# Variants of MiniLM's tokenizer.json, one setting changed each: the
# branches of loading and encoding the three vocabularies do not reach.
# Each is a list of (JSON path, value) patches applied to the file; the
# test applies the same ones (t/data/tokenizer/variants.json).
NO_TRUNC = [(["truncation"], None), (["padding"], None)]
VARIANTS = {
    "no-prefix": [(["model", "continuing_subword_prefix"], "")],
    "prefix-at": [(["model", "continuing_subword_prefix"], "@@")],
    "max-chars-8": [(["model", "max_input_chars_per_word"], 8)],
    "no-normalizer": [(["normalizer"], None)],
    "no-clean-text": [(["normalizer", "clean_text"], False)],
    "no-chinese": [(["normalizer", "handle_chinese_chars"], False)],
    "strip-no-lower": [(["normalizer", "lowercase"], False),
                       (["normalizer", "strip_accents"], True)],
    "lower-no-strip": [(["normalizer", "strip_accents"], False)],
    "no-pretokenizer": [(["pre_tokenizer"], None)],
    "bert-processing": [(["post_processor"], {
        "type": "BertProcessing", "sep": ["[SEP]", 102],
        "cls": ["[CLS]", 101]})],
    "no-post-processor": [(["post_processor"], None)],
    "template-2cls": [(["post_processor", "single"], [
        {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
        {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}},
        {"SpecialToken": {"id": "[SEP]", "type_id": 2}}]),
        (["post_processor", "pair"], [
            {"Sequence": {"id": "B", "type_id": 1}},
            {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "[CLS]", "type_id": 0}}])],
    "trunc-only-first": [(["truncation"], {"max_length": 14,
                          "strategy": "OnlyFirst", "stride": 0,
                          "direction": "Right"})],
    "trunc-only-second": [(["truncation"], {"max_length": 14,
                           "strategy": "OnlySecond", "stride": 0,
                           "direction": "Right"})],
}


def apply_patches(d, patches):
    for path, value in patches:
        o = d
        for k in path[:-1]:
            o = o[k]
        o[path[-1]] = value
    return d


def variant_goldens(lines):
    from tokenizers import Tokenizer
    with open(os.path.join(ROOT, "models/all-MiniLM-L6-v2/tokenizer.json"),
              encoding="utf-8") as f:
        base = f.read()
    pick = list(range(0, len(lines), 40))
    spec = {}
    for name, patches in VARIANTS.items():
        if not name.startswith("trunc-"):
            patches = NO_TRUNC + patches
        else:
            patches = [(["padding"], None)] + patches
        spec[name] = [[p, v] for p, v in patches]
        t = Tokenizer.from_str(json.dumps(apply_patches(json.loads(base),
                                                        patches)))
        rows = []
        for i in pick:
            j = (i + 1) % len(lines)
            for mode in ("single", "pair"):
                try:
                    e = (t.encode(lines[i]) if mode == "single"
                         else t.encode(lines[i], lines[j]))
                    rows.append("%d %s;%s" % (i, mode, fmt(e)))
                except Exception:
                    rows.append("%d %s;ERROR" % (i, mode))
        write_gz("golden-variant-%s.txt.gz" % name, rows)
    with open(os.path.join(DATA, "variants.json"), "w") as f:
        json.dump(spec, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("variants: %d x %d lines x 2 modes" % (len(VARIANTS), len(pick)))


def added_goldens(lines):
    from tokenizers import AddedToken
    t = load_reference("models/all-MiniLM-L6-v2")
    t.add_tokens([AddedToken(c, **kw) for c, kw in ADDED])
    added = json.loads(t.to_str())["added_tokens"]
    with open(os.path.join(DATA, "added-tokens.json"), "w") as f:
        json.dump(added, f, ensure_ascii=False, indent=1)
        f.write("\n")
    # every 4th line, and every line with an added token's text in it
    keys = [c.lower() for c, _ in ADDED] + ["naive", "\u03c3"]
    pick = [i for i, s in enumerate(lines)
            if i % 4 == 0 or any(k in s.lower() for k in keys)]
    single = t.encode_batch([lines[i] for i in pick])
    write_gz("golden-added-single.txt.gz",
             ["%d;%s" % (i, fmt(e)) for i, e in zip(pick, single)])
    # the vocab.txt fallback with tokenizer_config.json's
    # added_tokens_decoder (flags, ids past the vocabulary)
    t = load_reference("t/data/tokenizers/bert-base-chinese-added")
    single = t.encode_batch([lines[i] for i in pick])
    write_gz("golden-fallback-added-single.txt.gz",
             ["%d;%s" % (i, fmt(e)) for i, e in zip(pick, single)])
    print("added: %d lines single, 2 tokenizers" % len(pick))


def goldens(lines):
    for name, d in VOCABS:
        t = load_reference(d)
        single = t.encode_batch(lines)
        write_gz("golden-%s-single.txt.gz" % name, [fmt(e) for e in single])
        pairs = [(lines[i], lines[(i + 1) % len(lines)])
                 for i in range(len(lines))]
        pair = t.encode_batch(pairs)
        write_gz("golden-%s-pair.txt.gz" % name, [fmt(e) for e in pair])
        rows = []
        for k, ml in enumerate(TRUNC_LENGTHS):
            for direction in ("right", "left"):
                t.enable_truncation(ml, strategy="longest_first",
                                    direction=direction)
                for i in range(k, len(lines), 17):
                    j = (i + 3) % len(lines)
                    e = t.encode(lines[i])
                    rows.append("%d -1 %d %s;%s" % (i, ml, direction, fmt(e)))
                    e = t.encode(lines[i], lines[j])
                    rows.append("%d %d %d %s;%s" % (i, j, ml, direction,
                                                     fmt(e)))
        t.no_truncation()
        write_gz("golden-%s-trunc.txt.gz" % name, rows)
        print("%s: %d lines single+pair, %d truncation cases"
              % (name, len(lines), len(rows)))


CASE_DIRS = {
    "uncased": "models/all-MiniLM-L6-v2",
    "uncased-nostrip": "t/data/tokenizers/minilm-uncased-nostrip",
    "cased": "t/data/tokenizers/bert-base-cased",
    "chinese": "t/data/tokenizers/bert-base-chinese",
    "chinese-nocjk": "t/data/tokenizers/bert-base-chinese-nocjk",
}
CASE_VOCABS = {
    "tok-01": ["cased"],
    "tok-03": ["uncased"],
    "tok-04": ["uncased", "uncased-nostrip"],
    "tok-06": ["cased"],
    "tok-08": ["cased"],
    "tok-09": ["chinese"],
    "tok-10": ["chinese", "chinese-nocjk"],
    "tok-12": ["uncased", "cased"],
    "tok-13": ["uncased"],
    "tok-14": ["uncased"],
    "tok-15": ["uncased", "cased", "chinese"],
}


def cases():
    src = os.path.join(ROOT, "..", "shared", "cases", "tokenizer.jsonl")
    refs = {k: load_reference(d) for k, d in CASE_DIRS.items()}
    out = []
    with open(src) as f:
        for row in f:
            c = json.loads(row)
            inputs = [(c["input"], None)]
            if c["id"] == "tok-12":
                inputs.append(("Hello" * 26, None))
                inputs.append(("Hello" * 20 + " " + "hello" * 20, None))
            if c["id"] == "tok-14":
                inputs.append((c["input"], "pair"))
            if c["id"] == "tok-15":
                inputs.append(("\x01\x02\u200b\x7f\ufffd\x00", None))
                inputs.append(("", ""))
            for v in CASE_VOCABS[c["id"]]:
                for text, pair in inputs:
                    e = refs[v].encode(text, pair) if pair is not None \
                        else refs[v].encode(text)
                    out.append({"id": c["id"], "vocab": v,
                                "model": CASE_DIRS[v], "text": text,
                                "text_pair": pair, "ids": e.ids,
                                "type_ids": e.type_ids,
                                "offsets": [list(o) for o in e.offsets],
                                "tokens": e.tokens, "must": c["must"]})
    with open(os.path.join(DATA, "cases.jsonl"), "w") as f:
        for o in out:
            f.write(json.dumps(o, ensure_ascii=True) + "\n")
    print("cases: %d encodings" % len(out))


def main():
    import tokenizers
    os.makedirs(DATA, exist_ok=True)
    lines, used = build_corpus()
    write_gz("corpus.jsonl.gz", [json.dumps(s, ensure_ascii=False)
                                 for s in lines])
    write_sources(used)
    print("corpus: %d lines (tokenizers %s)" % (len(lines),
                                               tokenizers.__version__))
    if "--lines-only" in sys.argv:
        return
    goldens(lines)
    added_goldens(lines)
    variant_goldens(lines)
    cases()


if __name__ == "__main__":
    main()
