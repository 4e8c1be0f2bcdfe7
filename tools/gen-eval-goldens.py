#!/usr/bin/env python3
"""Golden evaluation reports for t/unit/test_eval.c.

Writes t/data/eval/goldens.json: a list of cases, each with the labels
(y_true, y_pred), scikit-learn's classification_report or seqeval's
classification_report as output_dict and as text (digits 2 and 4), and
sklearn's confusion_matrix (over tokens for sequence cases).  Every report
uses zero_division=0.  Sequence cases run seqeval's default (conlleval.pl
compatible) mode and mode="strict" with scheme=IOB2.

seqeval's own test data (tests/data/ground_truth*.txt, tests/conlleval.pl)
comes from its sdist: pass --seqeval-sdist DIR (an unpacked
seqeval-X.Y.Z directory), or the script runs
`pip download seqeval==<installed> --no-binary :all:` into a temporary
directory.  When perl is on PATH the conlleval.pl overall figures are
checked against seqeval's micro average.

Usage: .venv/bin/python tools/gen-eval-goldens.py [--seqeval-sdist DIR]
"""
import argparse
import csv
import importlib.metadata
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile

import sklearn
from seqeval.metrics import classification_report as seq_report
from seqeval.scheme import IOB2
from sklearn.metrics import classification_report as skl_report
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix
from sklearn.preprocessing import MultiLabelBinarizer

SEQEVAL_VERSION = importlib.metadata.version("seqeval")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = os.path.join(ROOT, "t", "data", "eval")
OUT = os.path.join(EVAL, "goldens.json")


def plain(o):
    """numpy scalars to Python numbers, recursively"""
    if isinstance(o, dict):
        return {k: plain(v) for k, v in o.items()}
    if hasattr(o, "item"):
        return o.item()
    return o


def confusion(y_true, y_pred):
    labels = sorted(set(y_true) | set(y_pred))
    m = confusion_matrix(y_true, y_pred, labels=labels)
    return {"labels": labels, "matrix": m.tolist()}


def classification_case(name, y_true, y_pred):
    return {
        "name": name,
        "kind": "classification",
        "y_true": y_true,
        "y_pred": y_pred,
        "dict": plain(skl_report(y_true, y_pred, output_dict=True,
                                 zero_division=0)),
        "text2": skl_report(y_true, y_pred, zero_division=0),
        "text4": skl_report(y_true, y_pred, digits=4, zero_division=0),
        "confusion": confusion(y_true, y_pred),
    }


def multilabel_case(name, names, y_true, y_pred):
    mlb = MultiLabelBinarizer(classes=names)
    yt = mlb.fit_transform(y_true)
    yp = mlb.transform(y_pred)
    kw = {"target_names": names, "zero_division": 0}
    return {
        "name": name,
        "kind": "multilabel",
        "names": names,
        "y_true": y_true,
        "y_pred": y_pred,
        "dict": plain(skl_report(yt, yp, output_dict=True, **kw)),
        "text2": skl_report(yt, yp, **kw),
        "text4": skl_report(yt, yp, digits=4, **kw),
        "confusion": {"labels": names,
                      "matrix": multilabel_confusion_matrix(yt, yp).tolist()},
    }


def sequence_cases(name, y_true, y_pred, strict=True):
    flat_true = [t for s in y_true for t in s]
    flat_pred = [t for s in y_pred for t in s]
    cases = []
    modes = [None, "strict"] if strict else [None]
    for mode in modes:
        kw = {"mode": mode, "scheme": IOB2} if mode else {}
        cases.append({
            "name": name + (" (strict)" if mode else ""),
            "kind": "seqeval",
            "mode": mode or "default",
            "y_true": y_true,
            "y_pred": y_pred,
            "dict": plain(seq_report(y_true, y_pred, output_dict=True,
                                     zero_division=0, **kw)),
            "text2": seq_report(y_true, y_pred, zero_division=0, **kw),
            "text4": seq_report(y_true, y_pred, digits=4, zero_division=0,
                                **kw),
            "confusion": confusion(flat_true, flat_pred),
        })
    return cases


def read_ground_truth(path):
    """seqeval tests/data: 'word pos true pred' lines, blank between
    sentences"""
    y_true, y_pred, t, p = [], [], [], []
    with open(path) as f:
        for line in f:
            line = line.rstrip()
            if not line:
                if t:
                    y_true.append(t)
                    y_pred.append(p)
                    t, p = [], []
                continue
            _, _, a, b = line.split(" ")
            t.append(a)
            p.append(b)
    if t:
        y_true.append(t)
        y_pred.append(p)
    return y_true, y_pred


def read_csv_labels(path, column):
    with open(path, newline="", encoding="utf-8") as f:
        return [row[column] for row in csv.DictReader(f)]


def read_conll_tags(path):
    sents, tags = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                if tags:
                    sents.append(tags)
                    tags = []
                continue
            tags.append(line.split()[-1])
    if tags:
        sents.append(tags)
    return sents


def conlleval_check(sdist, y_true, y_pred, report):
    if shutil.which("perl") is None:
        return
    lines = []
    for ts, ps in zip(y_true, y_pred):
        for a, b in zip(ts, ps):
            lines.append("w x %s %s" % (a, b))
        lines.append("")
    out = subprocess.run(["perl", os.path.join(sdist, "tests", "conlleval.pl")],
                         input="\n".join(lines), capture_output=True,
                         text=True, check=True).stdout
    items = out.split("\n")[1].split()
    f1 = float(items[-1]) / 100
    ours = report["micro avg"]["f1-score"]
    assert abs(ours - f1) < 1e-4, (ours, f1)


def sdist_dir(arg):
    if arg:
        return arg, None
    tmp = tempfile.mkdtemp()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                    "seqeval==%s" % SEQEVAL_VERSION,
                    "--no-binary", ":all:", "--no-deps", "-d", tmp],
                   check=True)
    tgz = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")][0]
    with tarfile.open(os.path.join(tmp, tgz)) as t:
        t.extractall(tmp)
    return os.path.join(tmp, tgz[:-len(".tar.gz")]), tmp


def random_tags(rng, n, types, prefixes):
    out = []
    for _ in range(n):
        p = rng.choice(prefixes)
        out.append("O" if p == "O" else p + "-" + rng.choice(types))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqeval-sdist")
    args = ap.parse_args()
    sdist, tmp = sdist_dir(args.seqeval_sdist)
    rng = random.Random(11)
    cases = []

    # --- scikit-learn classification_report -------------------------------
    c = classification_case
    cases.append(c("three classes", ["a", "b", "c", "a", "b", "c", "a"],
                   ["a", "c", "c", "a", "b", "b", "b"]))
    cases.append(c("label never predicted", ["x", "y", "z", "z"],
                   ["x", "x", "x", "z"]))
    cases.append(c("predicted label absent from truth", ["p", "p", "q"],
                   ["p", "r", "r"]))
    cases.append(c("all correct", ["cat", "dog", "dog"], ["cat", "dog", "dog"]))
    cases.append(c("all wrong", ["cat", "dog", "cat"], ["dog", "cat", "dog"]))
    cases.append(c("one class", ["only"] * 5, ["only"] * 5))
    cases.append(c("binary strings", ["0", "1", "1", "0", "1"],
                   ["0", "1", "0", "0", "0"]))
    cases.append(c("long and non-ASCII names",
                   ["card_arrival_and_delivery_estimate", "caf\u00e9",
                    "\u00fcber", "caf\u00e9", "B"],
                   ["caf\u00e9", "caf\u00e9", "\u00fcber",
                    "card_arrival_and_delivery_estimate", "B"]))
    labels77 = ["intent_%02d" % i for i in range(77)]
    t = [rng.choice(labels77) for _ in range(600)]
    p = [x if rng.random() < 0.8 else rng.choice(labels77) for x in t]
    cases.append(c("77 labels (Banking77-sized)", t, p))
    labels200 = ["L%03d" % i for i in range(200)]
    t = [rng.choice(labels200) for _ in range(900)]
    p = [x if rng.random() < 0.6 else rng.choice(labels200) for x in t]
    cases.append(c("200 labels", t, p))
    for k in range(6):
        labs = ["c%d" % i for i in range(rng.randint(2, 12))]
        t = [rng.choice(labs) for _ in range(rng.randint(5, 60))]
        p = [x if rng.random() < 0.5 else rng.choice(labs) for x in t]
        cases.append(c("random %d" % k, t, p))

    # --- scikit-learn on multi-label indicators ---------------------------
    m = multilabel_case
    cases.append(m("multi-label", ["negative", "neutral", "positive"],
                   [["positive", "negative"], [], ["positive"], ["neutral"]],
                   [["positive"], [], ["positive", "neutral"], []]))
    cases.append(m("multi-label, a label in neither",
                   ["a", "b", "unused"],
                   [["a"], ["a", "b"], ["b"]], [["b"], ["a"], []]))
    cases.append(m("multi-label, nothing predicted", ["x", "y"],
                   [["x"], ["y"], ["x", "y"]], [[], [], []]))
    cases.append(m("multi-label, no support", ["x", "y"],
                   [[], []], [["x"], []]))
    names = ["tag%02d" % i for i in range(20)]
    yt = [rng.sample(names, rng.randint(0, 4)) for _ in range(300)]
    yp = [[x for x in t if rng.random() < 0.7]
          + rng.sample(names, rng.randint(0, 2)) for t in yt]
    yp = [sorted(set(x)) for x in yp]
    cases.append(m("multi-label, 20 labels, 300 samples", names, yt, yp))

    # the example files of tools/aiserve-eval (t/unit/test_eval.c runs it)
    gold = read_csv_labels(os.path.join(EVAL, "gold.csv"), "category")
    pred = read_csv_labels(os.path.join(EVAL, "pred.csv"), "category")
    cases.append(c("example files gold.csv pred.csv", gold, pred))

    # --- seqeval ---------------------------------------------------------
    s = sequence_cases
    gold, pred = read_conll_tags(os.path.join(EVAL, "gold.conll")), \
        read_conll_tags(os.path.join(EVAL, "pred.conll"))
    cases += s("example files gold.conll pred.conll", gold, pred)
    cases += s("seqeval docstring",
               [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"],
                ["B-PER", "I-PER", "O"]],
               [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"],
                ["B-PER", "I-PER", "O"]])
    cases += s("entities at sentence ends",
               [["B-LOC", "I-LOC"], ["O", "B-PER"], ["B-ORG"]],
               [["B-LOC", "I-LOC"], ["O", "B-PER"], ["I-ORG"]])
    cases += s("I- without B-",
               [["O", "I-PER", "I-PER", "O", "B-LOC"]],
               [["O", "B-PER", "I-PER", "O", "I-LOC"]])
    cases += s("mixed types",
               [["B-PER", "I-LOC", "I-LOC", "B-ORG", "I-PER", "O"]],
               [["B-PER", "I-PER", "B-LOC", "B-ORG", "I-ORG", "O"]])
    cases += s("type never predicted",
               [["B-PER", "O", "B-MISC", "I-MISC"], ["B-LOC"]],
               [["B-PER", "O", "O", "O"], ["O"]])
    cases += s("predictions only",
               [["O", "O", "O"]], [["B-PER", "O", "B-LOC"]])
    cases += s("bare B and I", [["O", "B", "I", "I", "O"], ["B", "I", "O"]],
               [["O", "B", "I", "O", "O"], ["B", "B", "O"]])
    cases += s("non-ASCII types",
               [["B-Stra\u00dfe", "I-Stra\u00dfe", "O", "B-Ort"]],
               [["B-Stra\u00dfe", "O", "O", "B-Ort"]])
    cases += s("IOBES in default mode",
               [["S-PER", "O", "B-LOC", "E-LOC", "B-ORG", "I-ORG", "E-ORG"]],
               [["S-PER", "O", "B-LOC", "I-LOC", "B-ORG", "E-ORG", "S-ORG"]],
               strict=False)
    cases += s("IOB1 in default mode",
               [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]],
               [["I-PER", "B-PER", "B-PER", "O", "I-LOC"]])
    gt_true, gt_pred = read_ground_truth(
        os.path.join(sdist, "tests", "data", "ground_truth.txt"))
    gt = s("seqeval ground_truth.txt", gt_true, gt_pred)
    conlleval_check(sdist, gt_true, gt_pred, gt[0]["dict"])
    cases += gt
    for k in range(12):
        types = ["PER", "LOC", "ORG", "MISC"][:rng.randint(1, 4)]
        prefixes = ["O", "B", "I"] if k < 8 else ["O", "B", "I", "E", "S"]
        yt, yp = [], []
        for _ in range(rng.randint(1, 8)):
            n = rng.randint(1, 12)
            yt.append(random_tags(rng, n, types, prefixes))
            yp.append(random_tags(rng, n, types, prefixes))
        if not any(x != "O" for st in yt + yp for x in st):
            yt[0][0] = "B-PER"
        cases += s("random %d" % k, yt, yp, strict=(k < 8))
        if k < 8:
            conlleval_check(sdist, yt, yp, cases[-2]["dict"])

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "tools/gen-eval-goldens.py",
                   "scikit-learn": sklearn.__version__,
                   "seqeval": SEQEVAL_VERSION,
                   "cases": cases}, f, ensure_ascii=False)
        f.write("\n")
    if tmp:
        shutil.rmtree(tmp)
    print("%s: %d cases" % (OUT, len(cases)))


if __name__ == "__main__":
    main()
