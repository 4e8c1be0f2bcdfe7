#!/usr/bin/env python3
"""Drives aiserve's Files API with the openai client and prints what it
does: files.create (a training file and a file with an error), list,
retrieve, content, delete, and the 404 of another account's file.

    .venv/bin/python tools/check-files-openai.py --api-key KEY \\
        [--other-key KEY2] [--url http://127.0.0.1:8080] FILE...

The server needs a location with aiserve_files (conf/examples/files.conf).
Exits 1 when a call does not answer as the Files API should.
"""

import argparse
import sys

import openai


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--other-key", help="a key of another account")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    client = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1",
                           api_key=args.api_key)
    failed = 0
    ids = []

    for path in args.files:
        with open(path, "rb") as f:
            obj = client.files.create(file=f, purpose="fine-tune")
        print(f">>> client.files.create(file=open({path!r}, 'rb'), "
              f"purpose='fine-tune')\n{obj!r}")
        ids.append(obj.id)

    page = client.files.list(limit=2)
    print(">>> client.files.list(limit=2)")
    for obj in page.data:
        print(f"  {obj.id} {obj.filename} {obj.status}")
    print(f"  has_more={page.has_more}")
    every = [obj.id for obj in client.files.list(limit=2)]
    print(f">>> [f.id for f in client.files.list(limit=2)]  "
          f"# auto-paging\n{every}")
    if sorted(every) != sorted(ids):
        print("FAIL: the list is not the files uploaded")
        failed += 1

    obj = client.files.retrieve(ids[0])
    print(f">>> client.files.retrieve({ids[0]!r})\n{obj!r}")

    content = client.files.content(ids[0]).read()
    with open(args.files[0], "rb") as f:
        same = content == f.read()
    print(f">>> client.files.content({ids[0]!r}).read() == "
          f"open({args.files[0]!r}, 'rb').read()\n{same}")
    if not same:
        failed += 1

    if args.other_key:
        other = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1",
                              api_key=args.other_key)
        try:
            other.files.retrieve(ids[0])
            print("FAIL: another account sees the file")
            failed += 1
        except openai.NotFoundError as e:
            print(f">>> other.files.retrieve({ids[0]!r})  "
                  f"# another account's key\nNotFoundError {e.status_code} "
                  f"{e.body}")

    for i in ids:
        obj = client.files.delete(i)
        print(f">>> client.files.delete({i!r})\n{obj!r}")

    try:
        client.files.retrieve(ids[0])
        print("FAIL: a deleted file is still there")
        failed += 1
    except openai.NotFoundError as e:
        print(f">>> client.files.retrieve({ids[0]!r})  # deleted\n"
              f"NotFoundError {e.status_code}")

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
