#!/usr/bin/env python3
"""train-reference: the reference side of aiserve's fine-tuning, the same
recipes run by transformers' Trainer on the same data, evaluated with
scikit-learn and seqeval.

    .venv/bin/python tools/train-reference.py --task classify --mode full
        [--epochs 3] [--learning-rate 5e-5] [--batch-size 32]
        [--warmup-steps 0 (below 1: a share of the steps)] [--seed 42]
        [--sampling random|group_by_length] [--threads 2] [--out result.json]

Tasks:

  classify  Banking77 (DATA/banking77/train.csv, test.csv: text,category),
            BertForSequenceClassification with a new 77-label head on
            --model (all-MiniLM-L6-v2); labels sorted by name, as aiserve
            numbers them.  Modes:
              full  every weight, Trainer with DataCollatorWithPadding;
              head  the frozen encoder's features (the final hidden state
                    of [CLS], dropout off) computed once, then Trainer on
                    the head alone (pooler, dropout, classifier of the same
                    model), as aiserve's head mode trains.
            Reported: accuracy and scikit-learn's classification_report on
            test (zero_division 0).
  ner       WNUT-17 (DATA/wnut17/wnut17train.conll, emerging.test.annotated),
            BertForTokenClassification, full mode, labels on the first
            sub-token of each word and -100 elsewhere (the Hugging Face
            token-classification recipe); evaluation on test over the
            words' first sub-tokens with seqeval: entity F1 by its default
            (conlleval) chunking and in strict IOB2 mode, and its report.

Trainer's defaults otherwise: AdamW, weight decay 0, linear schedule with
--warmup-steps, gradient clipping at 1.0, dropout on, a shuffled sampler
seeded by --seed; batches of --batch-size sequences, on the CPU with
--threads threads.  Prints the figures and the whole result as JSON
(--out writes it to a file as well).
"""
import argparse
import csv
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LENGTH = 128


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def read_conll(path):
    """Sentences of (tokens, tags): one token a line, its tag in the last
    column, blank lines between sentences, -DOCSTART- skipped."""
    sents, toks, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split()
            if not cols:
                if toks:
                    sents.append((toks, tags))
                toks, tags = [], []
            elif cols[0] != "-DOCSTART-":
                toks.append(cols[0])
                tags.append(cols[-1])
    if toks:
        sents.append((toks, tags))
    return sents


class Rows:
    """A list of feature dicts as the torch Dataset Trainer reads."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def training_args(args, out_dir):
    from transformers import TrainingArguments
    return TrainingArguments(
        output_dir=out_dir, num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        warmup_steps=args.warmup_steps, seed=args.seed, weight_decay=0.0,
        lr_scheduler_type="linear", max_grad_norm=1.0, save_strategy="no",
        eval_strategy="no", logging_steps=50, report_to="none",
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
        train_sampling_strategy=args.sampling)


def predict(trainer, rows):
    """Trainer.predict in the rows' order: with group_by_length Trainer
    orders the evaluation by length too (its _get_eval_sampler), which
    would pair the predictions with other rows' labels."""
    trainer.args.train_sampling_strategy = "random"
    return trainer.predict(Rows(rows))


def classify(args, out_dir):
    import numpy as np
    import torch
    from sklearn.metrics import classification_report
    from transformers import (AutoModelForSequenceClassification,
                              AutoTokenizer, DataCollatorWithPadding,
                              Trainer, default_data_collator)

    texts, cats = read_csv(os.path.join(args.data, "banking77", "train.csv"))
    ttexts, tcats = read_csv(os.path.join(args.data, "banking77",
                                          "test.csv"))
    labels = sorted(set(cats))
    lid = {c: i for i, c in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id=lid)

    def rows(ts, cs):
        enc = tok(ts, truncation=True, max_length=MAX_LENGTH)
        return [{"input_ids": enc["input_ids"][i],
                 "attention_mask": enc["attention_mask"][i],
                 "token_type_ids": enc["token_type_ids"][i],
                 "labels": lid[cs[i]]} for i in range(len(ts))]

    train = rows(texts, cats)[:args.limit or None]
    test = rows(ttexts, tcats)[:args.limit or None]
    t0 = time.perf_counter()
    if args.mode == "full":
        trainer = Trainer(model=model, args=training_args(args, out_dir),
                          train_dataset=Rows(train),
                          data_collator=DataCollatorWithPadding(tok))
        trainer.train()
        logits = predict(trainer, test).predictions
    else:
        collator = DataCollatorWithPadding(tok)

        def features(rs):
            model.eval()
            out = []
            with torch.inference_mode():
                for i in range(0, len(rs), args.batch_size):
                    enc = collator([{k: v for k, v in r.items()
                                     if k != "labels"}
                                    for r in rs[i:i + args.batch_size]])
                    out.append(model.bert(**enc).last_hidden_state[:, 0])
            return torch.cat(out)

        class Head(torch.nn.Module):
            """BertForSequenceClassification past the encoder: pooler,
            dropout, classifier, and its single-label loss."""

            def __init__(self, m):
                super().__init__()
                self.pooler, self.dropout = m.bert.pooler, m.dropout
                self.classifier = m.classifier

            def forward(self, features, labels=None):
                pooled = self.pooler(features.unsqueeze(1))
                logits = self.classifier(self.dropout(pooled))
                out = {"logits": logits}
                if labels is not None:
                    out["loss"] = torch.nn.functional.cross_entropy(
                        logits, labels)
                return out

        ftrain, ftest = features(train), features(test)
        t_feats = time.perf_counter() - t0
        print("features: %.1f s" % t_feats, file=sys.stderr, flush=True)
        trainer = Trainer(
            model=Head(model), args=training_args(args, out_dir),
            train_dataset=Rows([{"features": ftrain[i],
                                 "labels": train[i]["labels"]}
                                for i in range(len(train))]),
            data_collator=default_data_collator)
        trainer.train()
        logits = predict(trainer, [{"features": ftest[i],
                                    "labels": test[i]["labels"]}
                                   for i in range(len(test))]).predictions
    seconds = time.perf_counter() - t0
    y_true = [r["labels"] for r in test]
    y_pred = np.asarray(logits).argmax(-1).tolist()
    kw = dict(labels=list(range(len(labels))), target_names=labels,
              zero_division=0, digits=4)
    report = classification_report(y_true, y_pred, output_dict=True, **kw)
    print(classification_report(y_true, y_pred, **kw))
    return {"accuracy": report["accuracy"], "report": report,
            "train_examples": len(train), "test_examples": len(test),
            "seconds": seconds,
            "train_loss": trainer.state.log_history[-1].get("train_loss")}


def ner(args, out_dir):
    import numpy as np
    from seqeval.metrics import classification_report, f1_score
    from seqeval.scheme import IOB2
    from transformers import (AutoModelForTokenClassification, AutoTokenizer,
                              DataCollatorForTokenClassification, Trainer)

    train = read_conll(os.path.join(args.data, "wnut17",
                                    "wnut17train.conll"))
    test = read_conll(os.path.join(args.data, "wnut17",
                                   "emerging.test.annotated"))
    labels = sorted({t for _, tags in train for t in tags})
    train, test = train[:args.limit or None], test[:args.limit or None]
    lid = {c: i for i, c in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id=lid)

    def rows(sents):
        out, cut = [], 0
        for words, tags in sents:
            enc = tok(words, is_split_into_words=True, truncation=True,
                      max_length=MAX_LENGTH)
            lab, prev = [], None
            for w in enc.word_ids():
                lab.append(-100 if w is None or w == prev else lid[tags[w]])
                prev = w
            cut += len(words) - len({w for w in enc.word_ids()
                                     if w is not None})
            out.append({"input_ids": enc["input_ids"],
                        "attention_mask": enc["attention_mask"],
                        "token_type_ids": enc["token_type_ids"],
                        "labels": lab})
        return out, cut

    rtrain, _ = rows(train)
    rtest, cut = rows(test)
    t0 = time.perf_counter()
    trainer = Trainer(model=model, args=training_args(args, out_dir),
                      train_dataset=Rows(rtrain),
                      data_collator=DataCollatorForTokenClassification(tok))
    trainer.train()
    pred = predict(trainer, rtest)
    seconds = time.perf_counter() - t0
    arg = np.asarray(pred.predictions).argmax(-1)
    y_true, y_pred = [], []
    for r, p in zip(rtest, arg):
        keep = [i for i, lab in enumerate(r["labels"]) if lab != -100]
        y_true.append([labels[r["labels"][i]] for i in keep])
        y_pred.append([labels[p[i]] for i in keep])
    print(classification_report(y_true, y_pred, digits=4))
    return {"entity_f1": f1_score(y_true, y_pred),
            "entity_f1_strict": f1_score(y_true, y_pred, mode="strict",
                                         scheme=IOB2),
            "report": classification_report(y_true, y_pred,
                                             output_dict=True),
            "train_sentences": len(train), "test_sentences": len(test),
            "words_without_tokens": cut, "seconds": seconds,
            "train_loss": trainer.state.log_history[-1].get("train_loss")}


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item"):
        return x.item()
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["classify", "ner"], required=True)
    ap.add_argument("--mode", choices=["full", "head"], default="full")
    ap.add_argument("--model", default=os.path.join(ROOT, "models",
                                                    "all-MiniLM-L6-v2"))
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup-steps", type=float, default=0,
                    help="warmup steps, or below 1 a share of the steps "
                    "(Trainer's warmup_steps)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sampling", choices=["random", "group_by_length"],
                    default="random",
                    help="Trainer's train_sampling_strategy: group_by_length "
                    "shuffles too but batches sequences of similar lengths "
                    "(less padding, a faster run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the result JSON here too")
    ap.add_argument("--limit", type=int, default=0,
                    help="the first N examples of each set only (a quick "
                    "check of the script; 0: all)")
    args = ap.parse_args()
    if args.task == "ner" and args.mode != "full":
        ap.error("ner trains in full mode only")

    import torch
    import transformers
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out_dir:
        res = (classify if args.task == "classify" else ner)(args, out_dir)
    res = {"task": args.task, "mode": args.mode,
           "model": os.path.basename(os.path.normpath(args.model)),
           "epochs": args.epochs, "learning_rate": args.learning_rate,
           "batch_size": args.batch_size, "warmup_steps": args.warmup_steps,
           "seed": args.seed, "sampling": args.sampling,
           "threads": args.threads, "limit": args.limit,
           "torch": torch.__version__,
           "transformers": transformers.__version__, **res}
    res = jsonable(res)
    key = "accuracy" if args.task == "classify" else "entity_f1"
    print("%s %s: %s %.4f (%.0f s)" % (args.task, args.mode, key, res[key],
                                       res["seconds"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    print(json.dumps({k: v for k, v in res.items() if k != "report"}))


if __name__ == "__main__":
    sys.exit(main())
