#!/usr/bin/env python3
"""Reference answers of the TEI and Hugging Face routes on MiniLM and the tiny models.

Writes t/data/routes-fixtures.json for t/060-routes.t:
  decode      tokenizers' Tokenizer.decode(ids, skip_special_tokens) of the
              ids tokenizers' encode gives (punctuation, contractions,
              subwords, special tokens, added-token ids)
  similarity  sentence-transformers' cos_sim of the source sentence's
              embedding with each sentence's (SentenceTransformer.similarity)
  embed_all   transformers' last_hidden_state of every token (BertModel),
              on models/tiny-st-cls (hidden_size 32: a small fixture) and on
              MiniLM for one short input
  tokenize    tokenizers' tokens of a text longer than MiniLM's max_seq
              (256), untruncated, with and without special tokens, in TEI's
              shape (id, text, special, start, stop; offsets in code points)
  hf_classify transformers' text-classification pipeline with top_k=None,
              the answer Hugging Face's Inference API gives (and
              huggingface_hub's InferenceClient.text_classification reads)

Run with the project's venv:  .venv/bin/python tools/gen-routes-fixtures.py
"""
import argparse
import json
import os

import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer
from transformers import AutoModel, AutoTokenizer, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = os.path.join(ROOT, "models/all-MiniLM-L6-v2")
TINY = os.path.join(ROOT, "models/tiny-st-cls")

DECODE_TEXTS = [
    "Hello world!",
    "I can't believe it's not butter, he said.",
    "Don't do that . Is it ? Yes ! I'm sure, we've seen they're here.",
    "Xylophones zigzagged quixotically past Zürich's überlong façades",
    "naïve café owners in Kraków ☃",
]

SIMILARITY = {
    "source_sentence": "A man is eating food.",
    "sentences": ["A man is eating a piece of bread.",
                  "The girl is carrying a baby.",
                  "A man is riding a horse.",
                  "A man is eating pasta."],
}

HIDDEN_TEXTS = ["hello world", "Zürich's façades, again!"]

LONG_TEXT = " ".join(
    "word%d is followed by antidisestablishmentarianism, naïve café" % i
    for i in range(60))


def hidden(path, texts):
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    for text in texts:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        out.append(h.tolist())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out",
                    default=os.path.join(ROOT, "t/data/routes-fixtures.json"))
    args = ap.parse_args()
    torch.manual_seed(0)

    out = {"decode": [], "similarity": [], "embed_all": [], "tokenize": [],
           "hf_classify": []}

    tok = Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    # tokenizer.json pads and truncates to 128: TEI's /tokenize and
    # /decode do neither
    tok.no_padding()
    tok.no_truncation()
    for text in DECODE_TEXTS:
        ids = tok.encode(text).ids
        for skip in [True, False]:
            out["decode"].append({
                "request": {"ids": ids, "skip_special_tokens": skip},
                "response": [tok.decode(ids, skip_special_tokens=skip)],
            })
    batch = [tok.encode(t).ids for t in DECODE_TEXTS[:3]]
    # a subword first, [MASK] and [PAD] in the middle
    batch.append([tok.token_to_id("##s"), 7592, 103, 0, 2088, 102])
    out["decode"].append({
        "request": {"ids": batch},
        "response": [tok.decode(ids, skip_special_tokens=True)
                     for ids in batch],
    })
    out["decode"].append({
        "request": {"ids": batch, "skip_special_tokens": False},
        "response": [tok.decode(ids, skip_special_tokens=False)
                     for ids in batch],
    })

    st = SentenceTransformer(MINILM, device="cpu")
    emb = st.encode([SIMILARITY["source_sentence"]] + SIMILARITY["sentences"],
                    convert_to_tensor=True)
    sims = st.similarity(emb[0:1], emb[1:])[0].tolist()
    out["similarity"].append({"request": {"inputs": SIMILARITY},
                              "response": sims})

    out["embed_all"].append({
        "model": "tiny-st-cls",
        "request": {"inputs": HIDDEN_TEXTS},
        "response": hidden(TINY, HIDDEN_TEXTS),
    })
    out["embed_all"].append({
        "model": "all-MiniLM-L6-v2",
        "request": {"inputs": "hello"},
        "response": hidden(MINILM, ["hello"]),
    })

    for special in [True, False]:
        enc = tok.encode(LONG_TEXT, add_special_tokens=special)
        tokens = []
        for i, (s, e) in zip(enc.ids, enc.offsets):
            is_special = tok.id_to_token(i) in ("[CLS]", "[SEP]") and s == e
            tokens.append({"id": i,
                           "text": tok.id_to_token(i) if is_special
                           else LONG_TEXT[s:e],
                           "special": is_special, "start": s, "stop": e})
        out["tokenize"].append({
            "request": {"inputs": LONG_TEXT, "add_special_tokens": special},
            "response": [tokens],
        })

    path = os.path.join(ROOT, "models/tiny-bert-seq-cls")
    clf = pipeline("text-classification", model=path, tokenizer=path,
                   device="cpu")
    text = "I love this movie, it is wonderful."
    out["hf_classify"].append({
        "request": {"inputs": text, "parameters": {}},
        "response": [clf(text, top_k=None)],
    })
    out["hf_classify"].append({
        "request": {"inputs": text, "parameters": {"top_k": 2}},
        "response": [clf(text, top_k=2)],
    })
    out["hf_classify"].append({
        "request": {"inputs": text,
                    "parameters": {"top_k": 1,
                                   "function_to_apply": "sigmoid"}},
        "response": [clf(text, top_k=1, function_to_apply="sigmoid")],
    })

    with open(args.out, "w") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}: " + ", ".join(
        f"{len(v)} {k}" for k, v in out.items()))


if __name__ == "__main__":
    main()
