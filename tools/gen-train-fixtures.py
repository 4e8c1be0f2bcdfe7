#!/usr/bin/env python3
"""Reference values for the aiserve training engine (issue 11), from torch
autograd on transformers' BERT classes, in the manner of llm.c's
train_gpt2.py / test_gpt2.c.  Run from the repository root:

    .venv/bin/python tools/gen-train-fixtures.py

For each case (the tiny task models of models/, and all-MiniLM-L6-v2 with a
new sequence-classification head) it writes t/data/train-<case>.safetensors
holding one batch of four sequences of different lengths (one a sentence
pair), padded here to the longest with an attention mask, while the C side
runs them packed, without padding:

  input_ids, token_type_ids, seq_lens   the packed batch (I32)
  label_ids (I32) or label_values (F32) its labels, packed
  hparams     F32 [lr, beta1, beta2, eps, weight_decay, warmup_steps,
              total_steps, max_grad_norm, accumulation_steps]
  loss, logits                          of the whole batch, dropout off
  grad:NAME   every parameter's gradient of that loss
  step:NAME   the parameter after 10 optimiser steps: each step sums the
              gradients of two micro-batches (sequences 0-1, 2-3) with
              their losses divided by 2, clips the global norm to 1.0 and
              takes an AdamW step (no decay on biases and LayerNorm
              weights) at the rate of get_linear_schedule_with_warmup
  losses      F32 [10] each step's loss (mean of its micro-batches)
  init:NAME   a new head's initial values, for the C side to load
  head:losses, head:step:NAME   the same 10 steps in head mode: the
              encoder frozen (requires_grad False but for the pooler)
  lora:init:NAME, lora:loss, lora:grad:NAME, lora:losses, lora:step:NAME
              the same in lora mode: peft's get_peft_model with
              LoraConfig(r=8, lora_alpha=16, target_modules=["query",
              "value"]) and the task type (classifier in modules_to_save),
              lora_B drawn at random (peft starts it at 0, which would
              leave lora_A without a gradient) and saved under lora:init:
  rows:NAME   (I32) for large matrices: the rows kept of grad: and step:
              (rows with a non-zero gradient, evenly spread, and two rows
              without), with gmax:NAME / gnorm:NAME, the whole gradient's
              max |g| and L2 norm

The model runs in float64, so the reference is exact to the precision the
C engine's fp32 is checked at.
"""
import os

import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import save_file
from transformers import (AutoTokenizer, BertForSequenceClassification,
                          BertForTokenClassification,
                          get_linear_schedule_with_warmup)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
DATA = os.path.join(ROOT, "t", "data")

torch.set_num_threads(2)

TEXTS = [
    ("The quick brown fox jumps over the lazy dog.", None),
    ("Hello world!", None),
    ("A man is riding a horse.", "Someone is on an animal."),
    ("Paris is the capital and most populous city of France, and the "
     "river Seine runs through it.", None),
]

# lr, beta1, beta2, eps, weight_decay, warmup, total, max_grad_norm, accum
HPARAMS = [1e-3, 0.9, 0.999, 1e-8, 0.01, 3, 10, 1.0, 2]
STEPS = 10

# Matrices over this many elements keep only some rows in the fixture;
# about this many floats of each.
FULL_LIMIT = 32768
ROW_BUDGET = 4096

CASES = [
    # name, model dir, class, new head (num_labels, problem_type) or None
    ("tiny-seq-cls", "tiny-bert-seq-cls", BertForSequenceClassification,
     None),
    ("tiny-multilabel", "tiny-bert-seq-multilabel",
     BertForSequenceClassification, None),
    ("tiny-regression", "tiny-bert-seq-regression",
     BertForSequenceClassification, None),
    ("tiny-ner", "tiny-bert-ner", BertForTokenClassification, None),
    ("minilm-seq-cls", "all-MiniLM-L6-v2", BertForSequenceClassification,
     (5, "single_label_classification")),
]


def load(model_dir, cls, new_head):
    torch.manual_seed(1234)
    kw = {"attn_implementation": "eager"}
    if new_head is not None:
        kw["num_labels"] = new_head[0]
        kw["problem_type"] = new_head[1]
    model = cls.from_pretrained(model_dir, **kw)
    model.eval()           # dropout off
    return model.double()


def make_batch(model_dir, model, task):
    tok = AutoTokenizer.from_pretrained(model_dir)
    seqs = []
    for a, b in TEXTS:
        enc = tok(a, b) if b is not None else tok(a)
        seqs.append((enc["input_ids"], enc.get("token_type_ids")
                     or [0] * len(enc["input_ids"])))
    C = model.config.num_labels
    g = torch.Generator().manual_seed(7)
    labels = []
    for i, (ids, _) in enumerate(seqs):
        if task == "token":
            # the HF recipe: -100 on special tokens and on some sub-tokens
            lab = torch.randint(0, C, (len(ids),), generator=g).tolist()
            lab[0] = lab[-1] = -100
            for j in range(2, len(ids) - 1, 3):
                lab[j] = -100
            labels.append(lab)
        elif task == "single":
            labels.append(i % C)
        elif task == "multi":
            labels.append(torch.randint(0, 2, (C,), generator=g)
                          .double().tolist())
        else:
            labels.append(torch.randn(C, generator=g, dtype=torch.float64)
                          .tolist())
    return seqs, labels


def padded(seqs, labels, idx, task):
    """The sequences idx padded to the longest, with the attention mask."""
    n = max(len(seqs[i][0]) for i in idx)
    ids = torch.zeros(len(idx), n, dtype=torch.long)
    tt = torch.zeros(len(idx), n, dtype=torch.long)
    mask = torch.zeros(len(idx), n, dtype=torch.long)
    for r, i in enumerate(idx):
        L = len(seqs[i][0])
        ids[r, :L] = torch.tensor(seqs[i][0])
        tt[r, :L] = torch.tensor(seqs[i][1])
        mask[r, :L] = 1
    if task == "token":
        lab = torch.full((len(idx), n), -100, dtype=torch.long)
        for r, i in enumerate(idx):
            lab[r, :len(labels[i])] = torch.tensor(labels[i])
    elif task == "single":
        lab = torch.tensor([labels[i] for i in idx], dtype=torch.long)
    else:
        lab = torch.tensor([labels[i] for i in idx], dtype=torch.float64)
        if lab.shape[1] == 1:
            lab = lab[:, 0]
    return dict(input_ids=ids, token_type_ids=tt, attention_mask=mask,
                labels=lab)


def no_decay(name):
    # transformers' Trainer.get_decay_parameter_names: LayerNorm weights
    # and every bias are left out of weight decay
    return "LayerNorm" in name or name.endswith("bias")


def rows_kept(g):
    """Rows of a large gradient kept in the fixture."""
    nz = (g.abs().sum(dim=1) > 0).nonzero().flatten().tolist()
    z = (g.abs().sum(dim=1) == 0).nonzero().flatten().tolist()
    k = max(4, min(32, ROW_BUDGET // g.shape[1]))
    pick = [nz[int(j * len(nz) / k)] for j in range(min(k, len(nz)))]
    pick += [z[int(j * len(z) / 2)] for j in range(min(2, len(z)))]
    return sorted(set(pick))


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def train_steps(model, seqs, labels, task):
    """STEPS optimiser steps as Trainer takes them; returns the losses."""
    lr, b1, b2, eps, wd, warmup, total, clip, accum = HPARAMS
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not no_decay(n)],
         "weight_decay": wd},
        {"params": [p for n, p in named if no_decay(n)],
         "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps,
                            foreach=False)
    sched = get_linear_schedule_with_warmup(opt, int(warmup), int(total))
    micro = [[0, 1], [2, 3]]
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        total_loss = 0.0
        for idx in micro:
            res = model(**padded(seqs, labels, idx, task))
            (res.loss / accum).backward()
            total_loss += res.loss.item() / accum
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], clip)
        opt.step()
        sched.step()
        losses.append(total_loss)
    return torch.tensor(losses, dtype=torch.float32)


def peft_name(name):
    """peft's parameter name as the engine (and a saved adapter) names it:
    no base_model.model. prefix, no adapter name, the trained copy of a
    module in modules_to_save under the module's own name."""
    name = name.replace("base_model.model.", "", 1)
    name = name.replace(".modules_to_save.default", "")
    return name.replace(".default", "")


def lora_model(model_dir, cls, new_head, task, out):
    """The peft model; its random lora_B saved to OUT, or (OUT None) the
    numbers drawn before, so both runs start equal."""
    base = load(model_dir, cls, new_head)
    cfg = LoraConfig(task_type=TaskType.TOKEN_CLS if task == "token"
                     else TaskType.SEQ_CLS, r=8, lora_alpha=16,
                     lora_dropout=0.0, target_modules=["query", "value"])
    torch.manual_seed(4321)
    model = get_peft_model(base, cfg).double()
    g = torch.Generator().manual_seed(99)
    for pname, p in model.named_parameters():
        if "lora_B" in pname:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g,
                                    dtype=torch.float64) * 0.05)
        if out is not None and "lora_" in pname:
            out["lora:init:" + peft_name(pname)] = f32(p)
    if out is None:
        init = lora_model.init
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_" in pname:
                    p.copy_(init[pname])
    else:
        lora_model.init = {n: p.detach().clone()
                           for n, p in model.named_parameters()
                           if "lora_" in n}
    model.eval()
    return model


def run_case(name, dirname, cls, new_head):
    model_dir = os.path.join(MODELS, dirname)
    model = load(model_dir, cls, new_head)
    cfg = model.config
    if cls is BertForTokenClassification:
        task = "token"
    elif cfg.problem_type == "multi_label_classification":
        task = "multi"
    elif cfg.problem_type == "regression" or (cfg.problem_type is None
                                              and cfg.num_labels == 1):
        task = "regression"
    else:
        task = "single"
    seqs, labels = make_batch(model_dir, model, task)
    out = {}

    out["input_ids"] = torch.tensor([i for s in seqs for i in s[0]],
                                    dtype=torch.int32)
    out["token_type_ids"] = torch.tensor([i for s in seqs for i in s[1]],
                                         dtype=torch.int32)
    out["seq_lens"] = torch.tensor([len(s[0]) for s in seqs],
                                   dtype=torch.int32)
    if task in ("token", "single"):
        flat = [y for lab in labels for y in lab] if task == "token" \
            else labels
        out["label_ids"] = torch.tensor(flat, dtype=torch.int32)
    else:
        out["label_values"] = torch.tensor(labels, dtype=torch.float32)
    out["hparams"] = torch.tensor(HPARAMS, dtype=torch.float32)

    if new_head is not None:
        for pname, p in model.named_parameters():
            if pname.startswith("classifier."):
                out["init:" + pname] = f32(p)

    # one forward + backward of the whole batch, padded
    batch = padded(seqs, labels, range(len(seqs)), task)
    res = model(**batch)
    res.loss.backward()
    out["loss"] = torch.tensor([res.loss.item()], dtype=torch.float32)
    if task == "token":
        m = batch["attention_mask"].bool()
        out["logits"] = f32(res.logits[m])
    else:
        out["logits"] = f32(res.logits)

    kept = {}
    for pname, p in model.named_parameters():
        g = p.grad
        if g.dim() == 2 and g.numel() > FULL_LIMIT:
            kept[pname] = rows_kept(g)
            out["rows:" + pname] = torch.tensor(kept[pname],
                                                dtype=torch.int32)
            out["grad:" + pname] = f32(g[kept[pname]])
            out["gmax:" + pname] = torch.tensor([g.abs().max().item()],
                                                dtype=torch.float32)
            out["gnorm:" + pname] = torch.tensor([g.norm().item()],
                                                 dtype=torch.float32)
        else:
            out["grad:" + pname] = f32(g)

    # 10 optimiser steps, each over two micro-batches, from a fresh copy
    model = load(model_dir, cls, new_head)
    out["losses"] = train_steps(model, seqs, labels, task)
    for pname, p in model.named_parameters():
        out["step:" + pname] = f32(p[kept[pname]] if pname in kept else p)

    # head mode: the same steps with the encoder frozen
    model = load(model_dir, cls, new_head)
    for pname, p in model.named_parameters():
        p.requires_grad = not (pname.startswith("bert.")
                               and not pname.startswith("bert.pooler."))
    out["head:losses"] = train_steps(model, seqs, labels, task)
    for pname, p in model.named_parameters():
        if p.requires_grad:
            out["head:step:" + pname] = f32(p[kept[pname]] if pname in kept
                                            else p)

    # lora mode
    model = lora_model(model_dir, cls, new_head, task, out)
    res = model(**batch)
    res.loss.backward()
    out["lora:loss"] = torch.tensor([res.loss.item()], dtype=torch.float32)
    for pname, p in model.named_parameters():
        if p.requires_grad:
            out["lora:grad:" + peft_name(pname)] = f32(p.grad)
    model = lora_model(model_dir, cls, new_head, task, None)
    out["lora:losses"] = train_steps(model, seqs, labels, task)
    for pname, p in model.named_parameters():
        if p.requires_grad:
            out["lora:step:" + peft_name(pname)] = f32(p)

    path = os.path.join(DATA, "train-%s.safetensors" % name)
    save_file(out, path, metadata={"model": dirname, "task": task,
                                   "generator": "tools/gen-train-fixtures.py"})
    print("%s: loss %.6f, %d tensors, %d bytes" % (
        path, out["loss"].item(), len(out), os.path.getsize(path)))


def main():
    for case in CASES:
        run_case(*case)


if __name__ == "__main__":
    main()
