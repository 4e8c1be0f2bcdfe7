#!/usr/bin/env python3
"""Drives aiserve's Files and fine-tuning APIs with the openai client
(openai-python, unchanged): files.create, fine_tuning.jobs.create /
retrieve / list / list_events / cancel, fine_tuning.jobs.checkpoints.list,
and prints a transcript.  Not part of `make test`: run it against a server
such as `make run` whose configuration has aiserve_files_store,
aiserve_fine_tuning_store and the two locations (README "Fine-tuning API").

  tools/ft-openai-check.py --base-url http://127.0.0.1:8080/v1 \\
      --api-key sk-... --model cls \\
      --train t/data/train/sentiment-train.jsonl \\
      --validation t/data/train/sentiment-valid.jsonl
"""
import argparse
import sys
import time

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
            "hyperparameters": {"n_epochs": a.epochs}}})
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


if __name__ == "__main__":
    main()
