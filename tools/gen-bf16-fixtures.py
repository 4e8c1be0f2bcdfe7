#!/usr/bin/env python3
"""Fixture for the bf16 gates (issue 14): 200 sentences of mixed lengths
in natural word order (unlike t/data/encoder-minilm.jsonl's random
vocabulary words), with all-MiniLM-L6-v2's fp32 embeddings from
sentence-transformers.  Run from the repository root with the venv:

    .venv/bin/python tools/gen-bf16-fixtures.py

writes t/data/encoder-bf16-minilm.jsonl, one line a sentence:
{"text", "input_ids", "embedding"} (ids from the HF tokenizer, cut at
max_seq_length 256 as sentence-transformers does; embedding: encode()
in fp32 on the CPU, mean pooling and Normalize).  The sentences are made
here from a small grammar with a fixed seed: 1 to about 300 words, so the
token counts spread over 3..256.
"""
import json
import os
import random

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
OUT = os.path.join(ROOT, "t", "data", "encoder-bf16-minilm.jsonl")

torch.set_num_threads(2)

SUBJECTS = ["the customer", "my bank", "our team", "the new phone",
            "a small dog", "the city council", "this restaurant",
            "the weather in Lisbon", "her brother", "the delivery",
            "the train to Berlin", "a researcher", "the app", "my card",
            "the hotel staff", "the movie", "the orchestra", "the server",
            "an old friend", "the committee"]
VERBS = ["was charged twice for", "loves", "could not find", "reported",
         "has been waiting for", "cancelled", "recommended", "repaired",
         "asked about", "forgot", "paid for", "complained about",
         "celebrated", "rejected", "improved", "wrote about", "delayed",
         "translated", "measured", "shared"]
OBJECTS = ["the transfer", "a refund", "the password reset", "two tickets",
           "the quarterly report", "a cup of coffee", "the top-up",
           "the exchange rate", "the lost parcel", "an invoice of 49.99 EUR",
           "the final chapter", "the monthly fee", "the broken screen",
           "the concert on Friday", "the ATM withdrawal", "the new policy",
           "a birthday cake", "the contactless payment", "the weekend trip",
           "the river cleanup"]
TAILS = ["", " yesterday", " last week", " again", " without any notice",
         " in March", " after the update", " at the airport",
         " because the website was down", " for the third time",
         " before the deadline", " and nobody answered"]
JOINS = [". ", "; ", ", and then ", " but ", ". Meanwhile, ", "? ", "! "]


def sentence(rnd):
    s = (rnd.choice(SUBJECTS) + " " + rnd.choice(VERBS) + " "
         + rnd.choice(OBJECTS) + rnd.choice(TAILS))
    return s[0].upper() + s[1:]


def text(rnd, n_words):
    parts = [sentence(rnd)]
    while sum(len(p.split()) for p in parts) < n_words:
        parts.append(rnd.choice(JOINS) + sentence(rnd))
    t = "".join(parts)
    return t if t[-1] in ".?!" else t + "."


def main():
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(MINILM, device="cpu")
    rnd = random.Random(14)
    texts = []
    while len(texts) < 200:
        n = rnd.choice([rnd.randint(1, 12), rnd.randint(12, 60),
                        rnd.randint(60, 160), rnd.randint(160, 300)])
        texts.append(text(rnd, n))
    emb = st.encode(texts, batch_size=16, convert_to_numpy=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for t, e in zip(texts, emb):
            ids = st.tokenizer(t, truncation=True,
                               max_length=st.max_seq_length)["input_ids"]
            f.write(json.dumps({
                "text": t, "input_ids": ids,
                "embedding": [float("%.8g" % v)
                              for v in np.asarray(e, dtype=np.float32)]},
                ensure_ascii=False) + "\n")
    lens = [len(st.tokenizer(t, truncation=True,
                             max_length=st.max_seq_length)["input_ids"])
            for t in texts]
    print("%s: %d sentences, %d..%d tokens (median %d)"
          % (OUT, len(texts), min(lens), max(lens), sorted(lens)[100]))


if __name__ == "__main__":
    main()
