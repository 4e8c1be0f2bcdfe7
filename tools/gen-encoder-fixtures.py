#!/usr/bin/env python3
"""Golden values for the aiserve encoder (issue 3), from the Hugging Face
implementation itself.  Run from the repository root with the project venv:

    .venv/bin/python tools/gen-encoder-fixtures.py [minilm] [tiny]

minilm: t/data/encoder-minilm.jsonl: all-MiniLM-L6-v2 (models/, fetched by
        `make deps`), >= 200 sentences of 1..256 tokens, each line
        {"text", "input_ids", "embedding"} where embedding is
        sentence-transformers' SentenceTransformer.encode() (fp32, CPU).
tiny:   models/tiny-bert-*: small random BertForSequenceClassification /
        BertForTokenClassification checkpoints (fixed seed) in f32 and bf16,
        complete HF directories (config, safetensors, tokenizer files), and
        t/data/encoder-tiny.jsonl with their logits from transformers.

The tokenizer runs here (HF tokenizers), and the ids are committed, so the
C tests do not depend on aiserve's own tokenizer.
"""
import json
import os
import random
import shutil
import struct
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
DATA = os.path.join(ROOT, "t", "data")

torch.set_num_threads(2)

SENTENCES = [
    "",
    "a",
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "nginx is a web server that can also be used as a reverse proxy.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Sentence embeddings map text to dense vectors of fixed size.",
    "Paris is the capital and most populous city of France.",
    "Les modèles de langue sont entraînés sur de grands corpus.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Это предложение написано по-русски.",
    "emoji 🙂 and symbols © ® ™ are tokenized too",
    "    leading and trailing spaces    ",
    "UPPER CASE and MiXeD case text",
    "numbers 3.14159, 2,718 and 1e-12 appear in configs",
    "tabs\tand\nnewlines\r\nare whitespace",
    "https://example.com/path?query=1&other=two#fragment",
    "don't can't won't shouldn't",
    "The invoice total was $1,234.56, due on 2024-03-01.",
    "BERT uses WordPiece tokenization with a 30,522-token vocabulary.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def vocab_words():
    words = []
    with open(os.path.join(MINILM, "vocab.txt"), encoding="utf-8") as f:
        for line in f:
            w = line.rstrip("\n")
            if w.isalpha() and w.isascii() and not w.startswith("[") \
                    and len(w) > 1:
                words.append(w)
    return words


def f32(x):
    return [float("%.9g" % v) for v in np.asarray(x, dtype=np.float32)]


def gen_minilm():
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(MINILM, device="cpu")
    tok = st.tokenizer
    rnd = random.Random(20261130)
    words = vocab_words()
    texts = list(SENTENCES)
    # random word sequences, lengths spread over 1..~300 words so that the
    # token counts cover 3..256 (max_seq_length truncates at 256)
    while len(texts) < 230:
        n = rnd.choice([rnd.randint(1, 20), rnd.randint(20, 120),
                        rnd.randint(120, 300)])
        texts.append(" ".join(rnd.choice(words) for _ in range(n)))

    emb = st.encode(texts, batch_size=16, convert_to_numpy=True,
                    normalize_embeddings=False)
    out = []
    for text, e in zip(texts, emb):
        ids = tok(text, truncation=True,
                  max_length=st.max_seq_length)["input_ids"]
        out.append({"text": text, "input_ids": ids, "embedding": f32(e)})

    # a 1-token sequence ([CLS] alone), through the same module pipeline
    feats = {"input_ids": torch.tensor([[101]]),
             "attention_mask": torch.tensor([[1]]),
             "token_type_ids": torch.tensor([[0]])}
    with torch.no_grad():
        e = st(feats)["sentence_embedding"][0].numpy()
    out.append({"text": None, "input_ids": [101], "embedding": f32(e)})

    lens = [len(o["input_ids"]) for o in out]
    path = os.path.join(DATA, "encoder-minilm.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for o in out:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    print("%s: %d sentences, %d..%d tokens" % (path, len(out), min(lens),
                                               max(lens)))


# --- tiny random models -----------------------------------------------------

TINY_TEXTS = [
    "hello world",
    "John Smith works for Acme Corporation in London.",
    "the movie was great and the music was better",
    "I did not like this at all.",
    "Paris and Berlin are cities in Europe.",
    "a",
    "Maria lives in New York and works at the United Nations.",
    "this is a longer sentence that goes on and on with many words so "
    "that the sequence is clearly longer than the others in the batch",
    "numbers like 42 and 7 are tokens too",
    "unknown words like xylophonist get split into pieces",
]

TINY_PAIRS = [
    ("what is the capital of france", "paris is the capital of france"),
    ("what is the capital of france", "the music was great"),
    ("who works for acme", "john smith works for acme corporation"),
]

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC",
              "B-MISC", "I-MISC"]

# name, class, labels, problem_type, hidden_act, dtype, gamma/beta naming
TINY_MODELS = [
    ("tiny-bert-seq-cls", "seq", ["negative", "positive"], None, "gelu",
     "f32", False),
    ("tiny-bert-seq-cls-bf16", "seq", ["negative", "positive"], None, "gelu",
     "bf16", False),
    ("tiny-bert-seq-multilabel", "seq", ["toxic", "insult", "threat"],
     "multi_label_classification", "gelu_new", "f32", False),
    ("tiny-bert-seq-regression", "seq", ["score"], "regression",
     "gelu_pytorch_tanh", "f32", False),
    ("tiny-bert-ner", "tok", NER_LABELS, None, "gelu", "f32", True),
    ("tiny-bert-ner-bf16", "tok", NER_LABELS, None, "gelu", "bf16", False),
]


def tiny_vocab():
    """A small WordPiece vocabulary taken from MiniLM's (uncased BERT):
    specials, single characters and their ## forms, frequent words."""
    with open(os.path.join(MINILM, "vocab.txt"), encoding="utf-8") as f:
        full = [line.rstrip("\n") for line in f]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [w for w in full if len(w) == 1 and w.isascii()
             and w.isprintable() and not w.isspace()]
    pieces = ["##" + c for c in chars if ("##" + c) in set(full)]
    words = [w for w in full[1996:] if w.isascii() and w.isalpha()
             and len(w) > 1][:1200]
    extra = [w for w in ("john", "smith", "acme", "corporation", "london",
                         "paris", "berlin", "europe", "maria", "york",
                         "united", "nations", "france", "capital", "movie",
                         "music", "xylophon", "##ist") if w in set(full)]
    vocab = []
    seen = set()
    for w in specials + chars + pieces + words + extra:
        if w not in seen:
            seen.add(w)
            vocab.append(w)
    return vocab


def save_tokenizer(d, vocab):
    """MiniLM's tokenizer (BertNormalizer, BertPreTokenizer, WordPiece,
    TemplateProcessing) over the small vocabulary, written as a complete
    HF tokenizer: tokenizer.json, vocab.txt, tokenizer_config.json,
    special_tokens_map.json."""
    from transformers import AutoTokenizer

    os.makedirs(d, exist_ok=True)
    ids = {w: i for i, w in enumerate(vocab)}
    with open(os.path.join(MINILM, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["model"]["vocab"] = ids
    tj["truncation"] = None
    tj["padding"] = None
    for a in tj["added_tokens"]:
        a["id"] = ids[a["content"]]
    for name, v in tj["post_processor"]["special_tokens"].items():
        v["ids"] = [ids[name]]
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(MINILM, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc.pop("name_or_path", None)
    tc["model_max_length"] = 128
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
    shutil.copy(os.path.join(MINILM, "special_tokens_map.json"), d)
    tok = AutoTokenizer.from_pretrained(d)
    assert tok("the john")["input_ids"] == [ids["[CLS]"], ids["the"],
                                            ids["john"], ids["[SEP]"]]
    return tok


def rename_gamma_beta(path):
    """Rewrites a safetensors file with LayerNorm.weight/bias named
    LayerNorm.gamma/beta (the TF-era naming of old BERT checkpoints)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(path)
    out = {}
    for k, v in sd.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma")
        k = k.replace("LayerNorm.bias", "LayerNorm.beta")
        out[k] = v
    save_file(out, path, metadata={"format": "pt"})


def gen_tiny():
    from transformers import (BertConfig, BertForSequenceClassification,
                              BertForTokenClassification)

    vocab = tiny_vocab()
    lines = []
    f32_logits = {}
    for name, kind, labels, problem, act, dtype, gamma in TINY_MODELS:
        d = os.path.join(ROOT, "models", name)
        shutil.rmtree(d, ignore_errors=True)
        tok = save_tokenizer(d, vocab)
        base = name.replace("-bf16", "")
        torch.manual_seed(1234 + sum(map(ord, base)))
        cfg = BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, type_vocab_size=2,
            hidden_act=act, initializer_range=0.2,
            id2label={i: l for i, l in enumerate(labels)},
            label2id={l: i for i, l in enumerate(labels)},
            problem_type=problem)
        cls = (BertForSequenceClassification if kind == "seq"
               else BertForTokenClassification)
        model = cls(cfg).eval()
        # random LayerNorm affine parameters and biases too, so that every
        # tensor matters to the output
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("bias") or "LayerNorm" in n:
                    p.add_(torch.randn_like(p) * 0.1)
        if dtype == "bf16":
            model = model.to(torch.bfloat16)
        model.save_pretrained(d, safe_serialization=True)
        st = os.path.join(d, "model.safetensors")
        if gamma:
            rename_gamma_beta(st)
        size = sum(os.path.getsize(os.path.join(dp, fn))
                   for dp, _, fns in os.walk(d) for fn in fns)
        assert size < 2 * 1024 * 1024, (name, size)

        # the reference: transformers loading the directory as saved, in
        # fp32 (bf16 weights are widened exactly, as aiserve does)
        ref = cls.from_pretrained(d, dtype=torch.float32).eval()
        inputs = [(t, None) for t in TINY_TEXTS]
        if kind == "seq":
            inputs += TINY_PAIRS
        for text, pair in inputs:
            enc = tok(text, pair, return_tensors="pt", truncation=True)
            with torch.no_grad():
                logits = ref(**enc).logits[0]
                if dtype == "f32":
                    # the directory as saved (renamed gamma/beta included)
                    # loads back to the model that was built
                    assert torch.allclose(logits, model(**enc).logits[0],
                                          atol=1e-6), name
                # the same weights with the other GELU form, to show that
                # the activation is told apart at this tolerance (num-03)
                if act == "gelu":
                    ref.config.hidden_act = "gelu_new"
                    for layer in ref.bert.encoder.layer:
                        from transformers.activations import ACT2FN
                        layer.intermediate.intermediate_act_fn = \
                            ACT2FN["gelu_new"]
                    other = ref(**enc).logits[0]
                    for layer in ref.bert.encoder.layer:
                        layer.intermediate.intermediate_act_fn = \
                            ACT2FN["gelu"]
                    ref.config.hidden_act = "gelu"
                else:
                    other = None
            line = {
                "model": name, "text": text, "text_pair": pair,
                "input_ids": enc["input_ids"][0].tolist(),
                "token_type_ids": enc["token_type_ids"][0].tolist(),
                "logits": f32(logits.reshape(-1).numpy()),
            }
            if other is not None:
                line["logits_tanh_gelu"] = f32(other.reshape(-1).numpy())
            key = (base, text, pair)
            if dtype == "f32":
                f32_logits[key] = line["logits"]
            else:
                line["logits_f32_model"] = f32_logits[key]
            lines.append(line)
        print("models/%s: %s, %s, %s, %d bytes" % (name, cls.__name__, act,
                                                   dtype, size))

    lines += gen_tiny_embedders(vocab)

    path = os.path.join(DATA, "encoder-tiny.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for o in lines:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    print("%s: %d cases" % (path, len(lines)))


def gen_tiny_embedders(vocab):
    """Tiny sentence-transformers models: BertModel + CLS pooling +
    Normalize, and BertModel + max pooling; references from
    SentenceTransformer.encode."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    lines = []
    for name, mode, normalize in (("tiny-st-cls", "cls", True),
                                  ("tiny-st-max", "max", False)):
        d = os.path.join(ROOT, "models", name)
        shutil.rmtree(d, ignore_errors=True)
        tok = save_tokenizer(d, vocab)
        torch.manual_seed(4321 + sum(map(ord, name)))
        cfg = BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, initializer_range=0.2)
        BertModel(cfg).eval().save_pretrained(d, safe_serialization=True)
        tr = models.Transformer(d, max_seq_length=128)
        mods = [tr, models.Pooling(32, pooling_mode=mode)]
        if normalize:
            mods.append(models.Normalize())
        st = SentenceTransformer(modules=mods, device="cpu")
        st.save(d)
        emb = st.encode(TINY_TEXTS, convert_to_numpy=True)
        for text, e in zip(TINY_TEXTS, emb):
            enc = tok(text, truncation=True)
            lines.append({"model": name, "text": text, "text_pair": None,
                          "input_ids": enc["input_ids"],
                          "token_type_ids": enc["token_type_ids"],
                          "embedding": f32(e)})
        print("models/%s: BertModel, %s pooling%s" %
              (name, mode, ", Normalize" if normalize else ""))
    return lines


if __name__ == "__main__":
    what = sys.argv[1:] or ["minilm", "tiny"]
    if "minilm" in what:
        gen_minilm()
    if "tiny" in what:
        gen_tiny()
