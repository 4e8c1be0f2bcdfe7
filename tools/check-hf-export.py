#!/usr/bin/env python3
"""Checks aiserve's model output (src/aiserve_hf_write.h) against the
reference libraries: directories written by tools/aiserve-export are loaded
with transformers, sentence-transformers and peft, and their outputs are
compared with aiserve's (tools/aiserve-embed).  Run from the repository
root after `make tools`:

    .venv/bin/python tools/check-hf-export.py [--keep DIR]

For each case it prints one line: the check, what the library reported
(missing / unexpected keys) and the largest |difference| of the outputs.

full  AutoModelFor{SequenceClassification,TokenClassification} / AutoModel
      .from_pretrained(dir, output_loading_info=True): no missing,
      unexpected or mismatched keys; logits (embeddings for a
      sentence-transformers BertModel) against aiserve's, max |diff| <= 1e-4;
      config fields (architectures, id2label, label2id, problem_type).
head  the base loaded with the head directory's config, head.safetensors
      loaded on it (load_state_dict(strict=False)): nothing unexpected,
      everything the base lacks in the file; logits those of the full
      directory written from the same tensors (max |diff| <= 1e-6, both in
      torch), and aiserve's (the directory loaded over its base) within
      1e-4.
lora  PeftModel.from_pretrained(base, dir): every LoRA and head tensor of
      the file lands on the model (values compared), no adapter parameter
      left out; its logits against the base with W + (alpha / r) B A
      merged by hand, max |diff| <= 1e-5, and against aiserve's (the
      adapter loaded over its base), max |diff| <= 1e-4.
Exit status 1 if any check fails.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import (AutoConfig, AutoModel,
                          AutoModelForSequenceClassification,
                          AutoModelForTokenClassification, AutoTokenizer)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT = os.path.join(ROOT, "tools", "aiserve-export")
EMBED = os.path.join(ROOT, "tools", "aiserve-embed")
MODELS = os.path.join(ROOT, "models")
TOL = 1e-4

SENTENCES = [
    "hello world",
    "John Smith works for Acme Corporation in London.",
    "The quick brown fox jumps over the lazy dog.",
    "I want to transfer money to my savings account",
    "Why was my card declined at the shop yesterday?",
    "a",
]

torch.set_num_threads(2)
failures = []


def report(name, ok, detail):
    print("%-4s %-52s %s" % ("ok" if ok else "FAIL", name, detail))
    if not ok:
        failures.append(name)


def export(base, out, *args):
    subprocess.run([EXPORT, *args, os.path.join(MODELS, base), out],
                   check=True)


def aiserve_outputs(model_dir, tokenizer_dir=None):
    """aiserve's logits (or embedding) per sentence."""
    lines = "".join(json.dumps({"text": s}) + "\n" for s in SENTENCES)
    args = ["--tokenizer", tokenizer_dir] if tokenizer_dir else []
    p = subprocess.run([EMBED, *args, model_dir], input=lines,
                       capture_output=True, text=True, check=True)
    out = []
    for line in p.stdout.splitlines():
        j = json.loads(line)
        if "error" in j:
            raise RuntimeError("aiserve-embed %s: %s" % (model_dir,
                                                         j["error"]))
        out.append(np.array(j["logits"] if "logits" in j
                            else j["embedding"], dtype=np.float64))
    return out


def torch_outputs(model, tok):
    """Logits, or for a BertModel the sentence embedding of
    all-MiniLM-L6-v2's modules (mean pooling, then Normalize)."""
    out = []
    with torch.no_grad():
        for s in SENTENCES:
            enc = tok(s, return_tensors="pt")
            o = model(**enc)
            if hasattr(o, "logits"):
                out.append(o.logits[0].double().numpy())
            else:
                v = o.last_hidden_state[0].double().mean(dim=0)
                out.append((v / v.norm()).numpy())
    return out


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def auto_class(arch):
    return {"BertForSequenceClassification":
            AutoModelForSequenceClassification,
            "BertForTokenClassification": AutoModelForTokenClassification,
            "BertModel": AutoModel}[arch]


def load_info_text(info):
    return "missing %d unexpected %d mismatched %d" % (
        len(info["missing_keys"]), len(info["unexpected_keys"]),
        len(info.get("mismatched_keys", [])))


def check_full(name, out_dir, labels=None, problem=None):
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    arch = cfg["architectures"][0]
    cls = auto_class(arch)
    # in fp32 like aiserve (a bf16 checkpoint's weights are exact in fp32)
    model, info = cls.from_pretrained(out_dir, output_loading_info=True,
                                      dtype=torch.float32)
    model.eval()
    clean = not (info["missing_keys"] or info["unexpected_keys"]
                 or info.get("mismatched_keys"))
    if labels is not None:
        clean = clean and model.config.id2label == dict(enumerate(labels)) \
            and model.config.label2id == {l: i for i, l in enumerate(labels)}
    if problem is not None:
        clean = clean and model.config.problem_type == problem
    if arch == "BertModel":
        if os.path.exists(os.path.join(out_dir, "modules.json")):
            from sentence_transformers import SentenceTransformer
            st = SentenceTransformer(out_dir, device="cpu")
            ref = [v.astype(np.float64) for v in
                   st.encode(SENTENCES, convert_to_numpy=True)]
        else:
            ref = None
    else:
        ref = torch_outputs(model, AutoTokenizer.from_pretrained(out_dir))
    d = max_diff(ref, aiserve_outputs(out_dir)) if ref is not None else 0.0
    report(name, clean and d <= TOL, "%s; %s vs aiserve max|diff| %.2e" % (
        load_info_text(info), arch, d))
    return model


def check_head(name, head_dir, full_model):
    cfg = AutoConfig.from_pretrained(head_dir)
    base = cfg.base_model_name_or_path
    cls = auto_class(cfg.architectures[0])
    model, binfo = cls.from_pretrained(base, config=cfg,
                                       output_loading_info=True,
                                       ignore_mismatched_sizes=True)
    model.eval()
    head = load_file(os.path.join(head_dir, "head.safetensors"))
    res = model.load_state_dict(head, strict=False)
    # what the base checkpoint lacks (or holds in another shape: the old
    # head of a base that was another task's) must all come from the head
    lacking = set(binfo["missing_keys"]) | {
        k[0] if isinstance(k, tuple) else k
        for k in binfo.get("mismatched_keys", [])}
    missing_head = sorted(lacking - set(head))
    tok = AutoTokenizer.from_pretrained(base)
    ref = torch_outputs(model, tok)
    d = max_diff(ref, torch_outputs(full_model, tok))
    da = max_diff(ref, aiserve_outputs(head_dir, base))
    ok = not res.unexpected_keys and not missing_head and d <= 1e-6 \
        and da <= TOL
    report(name, ok, "%d head tensors, unexpected %d, head missing %d; "
           "logits vs full export max|diff| %.2e, aiserve over the base "
           "%.2e" % (len(head), len(res.unexpected_keys), len(missing_head),
                     d, da))


def check_lora(name, lora_dir):
    from peft import PeftModel
    acfg = json.load(open(os.path.join(lora_dir, "adapter_config.json")))
    cfg = AutoConfig.from_pretrained(lora_dir)
    base_dir = acfg["base_model_name_or_path"]
    cls = auto_class(cfg.architectures[0])
    base = cls.from_pretrained(base_dir, config=cfg,
                               ignore_mismatched_sizes=True)
    peft_model = PeftModel.from_pretrained(base, lora_dir)
    peft_model.eval()
    tensors = load_file(os.path.join(lora_dir, "adapter_model.safetensors"))
    params = dict(peft_model.named_parameters())

    # every tensor of the file on the model, and every adapter parameter
    # of the model from the file
    landed, wrong = 0, []
    for k, v in tensors.items():
        inner = k[len("base_model.model."):]
        if ".lora_" in inner:
            key = "base_model.model." + inner.replace(
                ".weight", ".default.weight")
        else:
            mod, leaf = inner.rsplit(".", 1)
            if mod.endswith("pooler.dense"):
                mod = mod[:-len(".dense")] + ".modules_to_save.default.dense"
            else:
                mod += ".modules_to_save.default"
            key = "base_model.model." + mod + "." + leaf
        if key not in params or not torch.equal(params[key].data, v):
            wrong.append(k)
        else:
            landed += 1
    adapter_params = [k for k in params if ".lora_" in k]
    n_lora_file = sum(1 for k in tensors if ".lora_" in k)
    missing = len(adapter_params) - n_lora_file

    # the same model merged by hand: W += (alpha / r) B A
    ref = cls.from_pretrained(base_dir, config=cfg,
                              ignore_mismatched_sizes=True)
    ref.eval()
    scale = acfg["lora_alpha"] / acfg["r"]
    sd = ref.state_dict()
    for k, v in tensors.items():
        inner = k[len("base_model.model."):]
        if inner.endswith(".lora_A.weight"):
            mod = inner[:-len(".lora_A.weight")]
            b = tensors[k.replace("lora_A", "lora_B")]
            sd[mod + ".weight"] = sd[mod + ".weight"] + scale * (b @ v)
        elif ".lora_B." not in inner:
            sd[inner] = v
    ref.load_state_dict(sd)
    tok = AutoTokenizer.from_pretrained(base_dir)
    peft_out = torch_outputs(peft_model, tok)
    d = max_diff(peft_out, torch_outputs(ref, tok))
    da = max_diff(peft_out, aiserve_outputs(lora_dir, base_dir))
    ok = not wrong and missing == 0 and d <= 1e-5 and da <= TOL
    report(name, ok, "%d/%d tensors landed, adapter params missing %d; "
           "PeftModel vs merged by hand max|diff| %.2e, vs aiserve %.2e" % (
               landed, len(tensors), missing, d, da))


def main():
    keep = None
    if len(sys.argv) == 3 and sys.argv[1] == "--keep":
        keep = sys.argv[2]
    for tool in (EXPORT, EMBED):
        if not os.access(tool, os.X_OK):
            sys.exit("%s is missing: run `make tools` first" % tool)
    scratch = None if keep else tempfile.TemporaryDirectory(
        prefix="check-hf-export.")
    tmp = keep or scratch.name
    d = lambda n: os.path.join(tmp, n)

    # the tiny checkpoints written again as they are
    for base in ("tiny-bert-seq-cls", "tiny-bert-seq-cls-bf16",
                 "tiny-bert-seq-multilabel", "tiny-bert-seq-regression",
                 "tiny-bert-ner", "tiny-bert-ner-bf16", "tiny-st-cls"):
        export(base, d(base))
        check_full("full %s" % base, d(base))

    # new heads: a BertModel without a pooler, and all-MiniLM-L6-v2 (with
    # one) as both task models
    labels = ["negative", "neutral", "positive"]
    export("tiny-st-cls", d("st-seq-cls"), "--arch", "seq-cls",
           "--labels", ",".join(labels))
    check_full("full tiny-st-cls -> seq-cls, new head", d("st-seq-cls"),
               labels, "single_label_classification")
    export("tiny-st-cls", d("st-multi"), "--arch", "seq-cls", "--labels",
           "a,b,c,d", "--problem", "multi_label_classification")
    check_full("full tiny-st-cls -> multi-label, new head", d("st-multi"),
               list("abcd"), "multi_label_classification")
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    export("tiny-bert-seq-cls", d("seq-tok"), "--arch", "token-cls",
           "--labels", ",".join(tags))
    check_full("full tiny-bert-seq-cls -> token-cls, new head", d("seq-tok"),
               tags)
    minilm = os.path.join(MODELS, "all-MiniLM-L6-v2")
    if os.path.exists(os.path.join(minilm, "model.safetensors")):
        export("all-MiniLM-L6-v2", d("minilm"))
        check_full("full all-MiniLM-L6-v2 (sentence-transformers)",
                   d("minilm"))
        export("all-MiniLM-L6-v2", d("minilm-seq"), "--arch", "seq-cls",
               "--labels", ",".join(labels))
        minilm_seq = check_full("full all-MiniLM-L6-v2 -> seq-cls, new head",
                                d("minilm-seq"), labels)
        export("all-MiniLM-L6-v2", d("minilm-tok"), "--arch", "token-cls",
               "--labels", ",".join(tags))
        check_full("full all-MiniLM-L6-v2 -> token-cls, new head",
                   d("minilm-tok"), tags)
        export("all-MiniLM-L6-v2", d("minilm-head"), "--mode", "head",
               "--arch", "seq-cls", "--labels", ",".join(labels))
        check_head("head all-MiniLM-L6-v2 seq-cls", d("minilm-head"),
                   minilm_seq)
        export("all-MiniLM-L6-v2", d("minilm-lora"), "--mode", "lora",
               "--arch", "seq-cls", "--labels", ",".join(labels))
        check_lora("lora all-MiniLM-L6-v2 seq-cls r=8 query,value",
                   d("minilm-lora"))
        export("all-MiniLM-L6-v2", d("minilm-lora-emb"), "--mode", "lora",
               "--target", "query,key,value")
        check_lora("lora all-MiniLM-L6-v2 BertModel (embeddings) q,k,v",
                   d("minilm-lora-emb"))

    # head and LoRA on the tiny models
    seq = AutoModelForSequenceClassification.from_pretrained(
        d("tiny-bert-seq-cls")).eval()
    export("tiny-bert-seq-cls", d("seq-head"), "--mode", "head")
    check_head("head tiny-bert-seq-cls", d("seq-head"), seq)
    ner = AutoModelForTokenClassification.from_pretrained(
        d("tiny-bert-ner")).eval()
    export("tiny-bert-ner", d("ner-head"), "--mode", "head")
    check_head("head tiny-bert-ner", d("ner-head"), ner)
    export("tiny-bert-seq-cls", d("seq-lora"), "--mode", "lora", "--r", "4",
           "--alpha", "8")
    check_lora("lora tiny-bert-seq-cls r=4 query,value", d("seq-lora"))
    export("tiny-bert-ner", d("ner-lora"), "--mode", "lora", "--target",
           "query,key,value,attention.output.dense")
    check_lora("lora tiny-bert-ner r=8 q,k,v,attention.output.dense",
               d("ner-lora"))

    # a base without a pooler (a token classifier): the new pooler
    # travels with the head
    export("tiny-bert-ner", d("ner-seq"), "--arch", "seq-cls", "--labels",
           ",".join(labels))
    ner_seq = check_full("full tiny-bert-ner -> seq-cls, new pooler",
                         d("ner-seq"), labels)
    export("tiny-bert-ner", d("ner-seq-head"), "--mode", "head", "--arch",
           "seq-cls", "--labels", ",".join(labels))
    check_head("head tiny-bert-ner -> seq-cls, new pooler",
               d("ner-seq-head"), ner_seq)
    export("tiny-bert-ner", d("ner-seq-lora"), "--mode", "lora", "--arch",
           "seq-cls", "--labels", ",".join(labels))
    check_lora("lora tiny-bert-ner -> seq-cls, new pooler",
               d("ner-seq-lora"))

    print("%d checks failed" % len(failures) if failures
          else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
