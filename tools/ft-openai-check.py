#!/usr/bin/env python3
"""Drives aiserve's Files and fine-tuning APIs with the openai client
(openai-python, unchanged): files.create, fine_tuning.jobs.create /
retrieve / list / list_events / cancel, fine_tuning.jobs.checkpoints.list,
the job's result_files through files.retrieve and files.content, and
prints a transcript.  With --predict-url (a location that serves the
base model with api=predict or api=tei) it then calls the fine-tuned
model there (and with --other-key, as another account: 404), lists it with
models.list and deletes it with models.delete (GET and DELETE /v1/models,
`aiserve_endpoint models`).  Not part of `make test`: run it against a
server whose configuration has aiserve_files_store,
aiserve_fine_tuning_store and the locations (README "Fine-tuning API").

  tools/ft-openai-check.py --base-url http://127.0.0.1:8080/v1 \\
      --api-key sk-... --model cls \\
      --train t/data/train/sentiment-train.jsonl \\
      --validation t/data/train/sentiment-valid.jsonl \\
      --predict-url http://127.0.0.1:8080/predict
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request

import openai


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--validation")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--mode", help="full (default), head or lora")
    ap.add_argument("--predict-url")
    ap.add_argument("--other-key")
    ap.add_argument("--text", default="it was love of this album")
    a = ap.parse_args()

    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key)

    with open(a.train, "rb") as f:
        train = client.files.create(file=f, purpose="fine-tune")
    print("files.create:", train.id, train.status, train.bytes, "bytes")
    valid = None
    if a.validation:
        with open(a.validation, "rb") as f:
            valid = client.files.create(file=f, purpose="fine-tune")
        print("files.create:", valid.id, valid.status, valid.bytes, "bytes")

    job = client.fine_tuning.jobs.create(
        model=a.model, training_file=train.id,
        validation_file=valid.id if valid else None, suffix="openai-check",
        method={"type": "supervised", "supervised": {
            "hyperparameters": {"n_epochs": a.epochs}}},
        extra_body={"mode": a.mode} if a.mode else None)
    print("jobs.create:", job.id, job.status, job.model,
          job.method.supervised.hyperparameters)

    t0 = time.time()
    while job.status not in ("succeeded", "failed", "cancelled"):
        if time.time() - t0 > a.timeout:
            sys.exit("timed out waiting for " + job.id)
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    print("jobs.retrieve:", job.status, job.fine_tuned_model,
          "trained_tokens", job.trained_tokens, "hyperparameters",
          job.hyperparameters)
    if job.status != "succeeded":
        sys.exit("the job " + job.status + ": " + str(job.error))

    ids = [j.id for j in client.fine_tuning.jobs.list(limit=5)]
    print("jobs.list:", len(ids), "jobs, this one listed:", job.id in ids)

    events = client.fine_tuning.jobs.list_events(job.id, limit=3)
    for e in events.data:
        print("list_events:", e.created_at, e.level, e.type, e.message)

    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id, limit=2)
    for c in ckpts.data:
        print("checkpoints.list:", c.id, c.step_number,
              c.fine_tuned_model_checkpoint, c.metrics)

    for fid in job.result_files:
        f = client.files.retrieve(fid)
        print("files.retrieve:", f.id, f.purpose, f.filename, f.bytes,
              "bytes")
        lines = client.files.content(fid).text.splitlines()
        for line in lines[:2] + (["..."] + lines[-1:] if len(lines) > 3
                                 else lines[2:]):
            print("files.content:", line[:100])

    if a.predict_url:
        deploy_check(a, client, job.fine_tuned_model)

    job2 = client.fine_tuning.jobs.create(
        model=a.model, training_file=train.id,
        hyperparameters={"n_epochs": 40, "batch_size": 1})
    time.sleep(1)
    job2 = client.fine_tuning.jobs.cancel(job2.id)
    print("jobs.cancel:", job2.id, job2.status)

    try:
        client.fine_tuning.jobs.retrieve("ftjob-000000000000000000000000")
    except openai.NotFoundError as e:
        print("a missing job:", e.status_code, e.body)


def predict(url, key, model, text):
    """POSTs {"inputs": text, "model": model} to url: (status, JSON)"""
    req = urllib.request.Request(
        url, data=json.dumps({"inputs": text, "model": model}).encode(),
        headers={"Authorization": "Bearer " + key,
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def deploy_check(a, client, model):
    """the fine-tuned model: called, listed, deleted"""
    t0 = time.time()
    while True:
        status, out = predict(a.predict_url, a.api_key, model, a.text)
        if status != 404 or time.time() - t0 > 5:
            break
        time.sleep(0.2)
    print("predict:", status, json.dumps(out))
    if a.other_key:
        status, out = predict(a.predict_url, a.other_key, model, a.text)
        print("predict, another account:", status, out["error"]["code"])
    ids = [m.id for m in client.models.list()]
    print("models.list:", len(ids), "models, this one listed:", model in ids)
    print("models.retrieve:", client.models.retrieve(model))
    print("models.delete:", client.models.delete(model))
    time.sleep(1.5)
    status, out = predict(a.predict_url, a.api_key, model, a.text)
    print("predict after the delete:", status, out["error"]["code"])


if __name__ == "__main__":
    main()
