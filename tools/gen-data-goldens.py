#!/usr/bin/env python3
"""Featurization goldens for t/unit/test_data.c.

Reads the small training files of t/data/train/ with Python's own readers
(json, csv, a CoNLL split) and featurizes them as transformers does:
AutoTokenizer (fast) of a model directory, text (+ text_pair) for
classification, is_split_into_words=True for tagged words with labels on
the first sub-token of each word and -100 elsewhere (the token
classification recipe of transformers' examples, label_all_tokens=False),
labels numbered in sorted order.  Each file once without truncation and
once with max_length=8.  Writes t/data/train/features.json.

Usage: .venv/bin/python tools/gen-data-goldens.py
"""
import csv
import json
import os

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "t", "data", "train")
TOKENIZERS = {
    "minilm": os.path.join(ROOT, "models", "all-MiniLM-L6-v2"),
    "bert-base-cased": os.path.join(ROOT, "t", "data", "tokenizers",
                                    "bert-base-cased"),
}


def read_jsonl(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_csv(name, text, label):
    with open(os.path.join(DATA, name), newline="", encoding="utf-8") as f:
        return [{"text": r[text], "label": r[label]}
                for r in csv.DictReader(f) if r[text]]


def read_conll(name):
    sents, toks, tags = [], [], []
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if toks:
                    sents.append({"tokens": toks, "tags": tags})
                    toks, tags = [], []
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            toks.append(cols[0])
            tags.append(cols[-1])
    if toks:
        sents.append({"tokens": toks, "tags": tags})
    return sents


def classify(tok, rows, max_length):
    labels = sorted({r["label"] for r in rows})
    out = []
    for r in rows:
        kw = {"truncation": True, "max_length": max_length} if max_length \
            else {}
        enc = tok(r["text"], r.get("text_pair"), **kw)
        out.append({"input_ids": enc["input_ids"],
                    "token_type_ids": enc["token_type_ids"],
                    "label": labels.index(r["label"])})
    return labels, out


def tagged(tok, rows, max_length):
    labels = sorted({t for r in rows for t in r["tags"]})
    out = []
    for r in rows:
        kw = {"truncation": True, "max_length": max_length} if max_length \
            else {}
        enc = tok(r["tokens"], is_split_into_words=True, **kw)
        full = tok(r["tokens"], is_split_into_words=True)
        ids, prev = [], None
        for w in enc.word_ids():
            if w is None or w == prev:
                ids.append(-100)
            else:
                ids.append(labels.index(r["tags"][w]))
            prev = w
        kept = {w for w in enc.word_ids() if w is not None}
        had = {w for w in full.word_ids() if w is not None}
        out.append({"input_ids": enc["input_ids"],
                    "token_type_ids": enc["token_type_ids"],
                    "labels": ids,
                    "words_cut": len(had - kept)})
    return labels, out


def main():
    cases = []
    files = [
        ("classify.jsonl", "minilm", classify, read_jsonl("classify.jsonl")),
        ("classify.csv", "minilm", classify,
         read_csv("classify.csv", "text", "category")),
        ("ner.conll", "bert-base-cased", tagged, read_conll("ner.conll")),
        ("ner.jsonl", "bert-base-cased", tagged, read_jsonl("ner.jsonl")),
    ]
    for name, tname, fn, rows in files:
        tok = AutoTokenizer.from_pretrained(TOKENIZERS[tname])
        assert tok.is_fast
        for max_length in (0, 8):
            labels, feats = fn(tok, rows, max_length)
            cases.append({"file": name, "tokenizer": tname,
                          "max_length": max_length, "labels": labels,
                          "features": feats})
    with open(os.path.join(DATA, "features.json"), "w") as f:
        json.dump({"generator": "tools/gen-data-goldens.py",
                   "cases": cases}, f, ensure_ascii=False)
        f.write("\n")
    print("%s: %d cases" % (os.path.join(DATA, "features.json"), len(cases)))


if __name__ == "__main__":
    main()
