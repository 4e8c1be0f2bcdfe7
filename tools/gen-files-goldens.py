#!/usr/bin/env python3
"""Token counts of the files t/061-files.t uploads, for its checks of the
Files API's validation (src/aiserve_files.c): examples, labels and tokens
as transformers' tokenizer of models/all-MiniLM-L6-v2 counts them
([CLS] and [SEP] included, truncation to the model's max length, no
padding).  Also writes t/data/files/banking77-train-slice.csv: every 33rd
row of shared/data/banking77/train.csv (CC BY 4.0, PolyAI), header kept.

usage: tools/gen-files-goldens.py [BANKING77_DIR]  (writes t/data/files/;
       default $AISERVE_SHARED_DATA/banking77, AISERVE_SHARED_DATA
       defaulting to ../shared/data as for t/unit/test_data.c)
"""

import csv
import json
import os
import sys

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "t", "data", "files")


def write_slice(banking77):
    with open(os.path.join(banking77, "train.csv"), newline="") as f:
        rows = list(csv.reader(f))
    with open(os.path.join(OUT, "banking77-train-slice.csv"), "w",
              newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(rows[0])
        w.writerows(rows[1:][::33])


def read_jsonl(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


def read_conll(path):
    sents, words = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if not cols:
                if words:
                    sents.append(words)
                words = []
            elif cols[0] != "-DOCSTART-":
                words.append((cols[0], cols[-1]))
    if words:
        sents.append(words)
    return sents


def main():
    banking77 = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("AISERVE_SHARED_DATA", "../shared/data"),
        "banking77")
    write_slice(banking77)

    tok = AutoTokenizer.from_pretrained(
        os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))

    def count(text, pair=None):
        return len(tok(text, pair, truncation=True)["input_ids"])

    golden = {}

    rows = read_jsonl(os.path.join(ROOT, "t/data/train/classify.jsonl"))
    golden["classify.jsonl"] = {
        "examples": len(rows),
        "num_labels": len({r["label"] for r in rows}),
        "tokens": sum(count(r["text"], r.get("text_pair")) for r in rows)}

    rows = read_jsonl(os.path.join(ROOT, "t/data/train/ner.jsonl"))
    golden["ner.jsonl"] = {
        "examples": len(rows),
        "num_labels": len({t for r in rows for t in r["tags"]}),
        "tokens": sum(count(" ".join(r["tokens"])) for r in rows)}

    sents = read_conll(os.path.join(ROOT, "t/data/train/ner.conll"))
    golden["ner.conll"] = {
        "examples": len(sents),
        "tokens": sum(count(" ".join(w for w, _ in s)) for s in sents)}

    with open(os.path.join(OUT, "banking77-train-slice.csv"),
              newline="") as f:
        rows = list(csv.DictReader(f))
    golden["banking77-train-slice.csv"] = {
        "examples": len(rows),
        "num_labels": len({r["category"] for r in rows}),
        "tokens": sum(count(r["text"]) for r in rows)}

    with open(os.path.join(OUT, "tokens.json"), "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
