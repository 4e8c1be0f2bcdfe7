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


if __name__ == "__main__":
    what = sys.argv[1:] or ["minilm", "tiny"]
    if "minilm" in what:
        gen_minilm()
    if "tiny" in what:
        gen_tiny()
