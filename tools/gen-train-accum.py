#!/usr/bin/env python3
"""Gradient accumulation as transformers' Trainer does it, for aiserve's
trainer (issue 11).  Run from the repository root:

    .venv/bin/python tools/gen-train-accum.py

Trainer itself (the installed transformers; 5.24.0 when this was written)
trains models/tiny-bert-ner, its own head kept, dropout off, in float64,
on the two sentences of t/data/train/accum.conll (9 and 2 words: micro-
batches of different numbers of labelled tokens), one sentence a
micro-batch, gradient_accumulation_steps 2, so each epoch is one
optimiser step over both; 2 epochs, learning rate 1e-3, linear decay,
clipping at 1.0, weight decay 0.01.  What Trainer does with the micro-
batches' losses shows in the pre-clipping gradient norm and, through the
clipping and AdamW, in the parameters.  Trainer >= 4.46 counts the
accumulated batch's labelled items (num_items_in_batch) and, since
BertForTokenClassification.forward takes **kwargs, passes the count to
the model and does not divide the loss by the accumulation steps; BERT's
loss ignores the count and stays the mean of its micro-batch: the step's
gradient is the sum of the micro-batches' mean-loss gradients.  The
script also prints the norms the other two conventions would give (the
mean over the micro-batches; the mean over every labelled token of the
step), to show the fixture tells them apart.

Writes t/data/train-accum.safetensors (float64 values stored as F32):
  hparams      F32 [learning_rate, weight_decay, max_grad_norm, epochs,
               accumulation_steps, batch_tokens (fits one sentence, not
               two)]
  grad_norms   F32 [epochs] Trainer's logged grad_norm of each step
  losses       F32 [epochs] Trainer's logged loss of each step
  step:NAME    F32 every parameter after the last step
"""
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import (AutoTokenizer, BertForTokenClassification,
                          DataCollatorForTokenClassification, Trainer,
                          TrainerCallback, TrainingArguments)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "tiny-bert-ner")
CONLL = os.path.join(ROOT, "t", "data", "train", "accum.conll")
OUT = os.path.join(ROOT, "t", "data", "train-accum.safetensors")
LR, WD, CLIP, EPOCHS, ACCUM = 1e-3, 0.01, 1.0, 2, 2

torch.set_num_threads(1)


def sentences():
    out, words, tags = [], [], []
    with open(CONLL, encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if not cols:
                out.append((words, tags))
                words, tags = [], []
            else:
                words.append(cols[0])
                tags.append(cols[-1])
    if words:
        out.append((words, tags))
    return out


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class Norms(TrainerCallback):
    """The accumulated gradient before clipping, as the optimiser gets
    it, for the other conventions' norms."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.grads.append([p.grad.detach().clone()
                           for p in model.parameters()])


def model_f64():
    m = BertForTokenClassification.from_pretrained(
        MODEL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return m.double()


def main():
    tok = AutoTokenizer.from_pretrained(MODEL)
    ref = model_f64()
    lid = ref.config.label2id
    rows = []
    for words, tags in sentences():
        enc = tok(words, is_split_into_words=True)
        lab, prev = [], None
        for w in enc.word_ids():
            lab.append(-100 if w is None or w == prev else lid[tags[w]])
            prev = w
        rows.append({"input_ids": enc["input_ids"],
                     "attention_mask": enc["attention_mask"],
                     "token_type_ids": enc["token_type_ids"],
                     "labels": lab})
    lens = [len(r["input_ids"]) for r in rows]
    budget = max(lens)
    assert sum(lens) > budget

    norms = Norms()
    args = TrainingArguments(
        output_dir="/tmp/gen-train-accum", num_train_epochs=EPOCHS,
        learning_rate=LR, weight_decay=WD, max_grad_norm=CLIP,
        per_device_train_batch_size=1, gradient_accumulation_steps=ACCUM,
        lr_scheduler_type="linear", warmup_steps=0, seed=42,
        logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    model = model_f64()
    trainer = Trainer(model=model, args=args, train_dataset=Rows(rows),
                      data_collator=DataCollatorForTokenClassification(tok),
                      callbacks=[norms])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "grad_norm" in h]
    assert len(logs) == EPOCHS

    # the other conventions' norms at the first step, for the record
    def norm_of(weights):
        ref.zero_grad()
        for r, wt in zip(rows, weights):
            b = DataCollatorForTokenClassification(tok)([r])
            (ref(**b).loss * wt).backward()
        return torch.sqrt(sum((p.grad ** 2).sum()
                              for p in ref.parameters())).item()
    items = [sum(1 for x in r["labels"] if x != -100) for r in rows]
    print("transformers", transformers.__version__)
    print("step 1 grad_norm: Trainer %.6f; sum of micro-batch means %.6f; "
          "mean of them %.6f; mean over the step's %d labelled tokens %.6f"
          % (logs[0]["grad_norm"], norm_of([1, 1]), norm_of([.5, .5]),
             sum(items), norm_of([n / sum(items) for n in items])))

    t = {"hparams": torch.tensor([LR, WD, CLIP, EPOCHS, ACCUM, budget],
                                 dtype=torch.float32),
         "grad_norms": torch.tensor([h["grad_norm"] for h in logs],
                                    dtype=torch.float32),
         "losses": torch.tensor([h["loss"] for h in logs],
                                dtype=torch.float32)}
    for n, p in model.named_parameters():
        t["step:" + n] = p.detach().float().contiguous()
    save_file(t, OUT)
    print("wrote", OUT, "budget", budget, "tokens", lens)


if __name__ == "__main__":
    main()
