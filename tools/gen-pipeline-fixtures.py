#!/usr/bin/env python3
"""Reference answers of the Hugging Face pipelines on the committed tiny models.

Writes t/data/pipeline-fixtures.json: what transformers'
`token-classification` pipeline returns on models/tiny-bert-ner with every
aggregation_strategy, what `text-classification` returns on
models/tiny-bert-seq-{cls,multilabel,regression} with top_k and
function_to_apply, and cross-encoder rerank scores (sigmoid of the single
logit, as sentence-transformers' CrossEncoder) on the one-label model.  The
nginx suites (t/02-predict-ner.t) compare aiserve's answers with these.

Run with the project's venv:  .venv/bin/python tools/gen-pipeline-fixtures.py
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from transformers import (AutoModelForSequenceClassification,
                          AutoTokenizer, pipeline)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NER_TEXTS = [
    "My name is Wolfgang and I live in Berlin",
    "Hugging Face Inc. is a company based in New York City.",
    "Xylophones zigzagged quixotically past Zürich's überlong façades!",
    "I can't believe it's not butter, he said.",
    "Émile Zola wrote in Paris ☃ near the Seine",
    "naïve café owners in Kraków",
]

CLS_TEXTS = [
    "I love this movie, it is wonderful.",
    "This is the worst thing I have ever bought.",
    "meh",
]

PAIRS = [
    {"text": "A man is eating food.", "text_pair": "A man eats."},
    {"text": "The girl is carrying a baby.", "text_pair": "It rains."},
]

RERANK = {
    "query": "What is the capital of France?",
    "texts": ["Paris is the capital of France.",
              "Berlin is in Germany.",
              "The capital of France is a large city.",
              "Bananas are yellow."],
}


def plain(x):
    """numpy scalars -> Python, recursively."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "t/data/pipeline-fixtures.json"))
    args = ap.parse_args()
    torch.manual_seed(0)

    out = {"ner": [], "classify": [], "rerank": []}

    path = os.path.join(ROOT, "models/tiny-bert-ner")
    ner = pipeline("token-classification", model=path, tokenizer=path,
                   device="cpu")
    for strategy in ["none", "simple", "first", "average", "max"]:
        for text in NER_TEXTS:
            out["ner"].append({
                "request": {"inputs": text, "aggregation_strategy": strategy},
                "response": plain(ner(text, aggregation_strategy=strategy)),
            })
        out["ner"].append({
            "request": {"inputs": NER_TEXTS[:3],
                        "aggregation_strategy": strategy},
            "response": plain(ner(NER_TEXTS[:3],
                                  aggregation_strategy=strategy)),
        })
    out["ner"].append({
        "request": {"inputs": NER_TEXTS[1], "aggregation_strategy": "simple",
                    "ignore_labels": []},
        "response": plain(ner(NER_TEXTS[1], aggregation_strategy="simple",
                              ignore_labels=[])),
    })

    for name in ["tiny-bert-seq-cls", "tiny-bert-seq-multilabel",
                 "tiny-bert-seq-regression"]:
        path = os.path.join(ROOT, "models", name)
        clf = pipeline("text-classification", model=path, tokenizer=path,
                       device="cpu")
        variants = [{}, {"top_k": 1}, {"top_k": None}, {"top_k": 2}]
        for fn in ["sigmoid", "softmax", "none"]:
            variants.append({"function_to_apply": fn})
            variants.append({"function_to_apply": fn, "top_k": None})
        for kw in variants:
            for inputs in [CLS_TEXTS[0], CLS_TEXTS, PAIRS[0], PAIRS]:
                out["classify"].append({
                    "model": name,
                    "request": dict(inputs=inputs, **kw),
                    "response": plain(clf(inputs, **kw)),
                })

    path = os.path.join(ROOT, "models/tiny-bert-seq-regression")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    enc = tok([RERANK["query"]] * len(RERANK["texts"]), RERANK["texts"],
              padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[:, 0].float()
    scores = torch.sigmoid(logits).tolist()
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    out["rerank"].append({
        "model": "tiny-bert-seq-regression",
        "request": dict(RERANK, return_text=True),
        "response": [{"index": i, "score": scores[i],
                      "text": RERANK["texts"][i]} for i in order],
    })
    out["rerank"].append({
        "model": "tiny-bert-seq-regression",
        "request": dict(RERANK, raw_scores=True),
        "response": [{"index": i, "score": logits[i].item()}
                     for i in order],
    })

    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}: {len(out['ner'])} ner, "
          f"{len(out['classify'])} classify, {len(out['rerank'])} rerank",
          file=sys.stderr)


if __name__ == "__main__":
    main()
