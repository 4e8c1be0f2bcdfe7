#!/usr/bin/env python3
"""Reference file for aiserve's safetensors writer (src/aiserve_st_write.c),
written by the `safetensors` package itself.  Run from the repository root:

    .venv/bin/python tools/gen-st-write-fixtures.py

writes t/data/st-write/reference.safetensors with safetensors.torch.
save_file() and metadata {"format": "pt"} (one entry: the reference keeps
metadata in a hash map, so only one entry has a fixed order).  The tensors
(t/unit/test_st_write.c builds the same ones and expects the same bytes):

  "b.weight"   F32 [2, 3]  i * 0.5 - 1
  "a.bias"     F32 [3]     1, 2, 3
  "scalar"     F32 []      42.5
  "empty"      F32 [0, 3]
  "ids"        I64 [1, 5]  0..4
  NAME_ODD     F32 [1]     7 (a name that needs JSON escapes)
  "conv.bf16"  BF16 [n]    CONVERT_BITS as float32, .to(torch.bfloat16)
  "conv.f16"   F16 [n]     CONVERT_BITS as float32, .to(torch.float16)

CONVERT_BITS are float32 bit patterns chosen for the rounding rules: ties to
even in both directions, the largest finite half and the first value that
rounds to infinity, half subnormals and their ties, infinities.  NaN is left
out: torch's vectorised float -> bfloat16 gives 0xffff and its scalar one
0x7fc0, so no bit pattern is the reference (the C test checks that NaN
stays NaN).  The script also checks that the file reads back with
safetensors.safe_open.
"""
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "t", "data", "st-write", "reference.safetensors")

NAME_ODD = "odd \"name\"\t\\ \u00e9/\x01"

# keep in step with t/unit/test_st_write.c
CONVERT_BITS = [
    0x00000000, 0x80000000, 0x3f800000, 0xbf800000,
    0x3f808000,  # 1 + 2^-8: a bf16 tie, to even (down)
    0x3f818000,  # a bf16 tie, to even (up)
    0x3f80c000, 0x3f804000, 0x3f801000,  # half: ties and near-ties
    0x3f800800, 0x3f801800,
    0x477fe000,  # 65504, the largest half
    0x477fefff,  # just under 65520: rounds to 65504
    0x477ff000,  # 65520: rounds to half infinity
    0x7f7fffff,  # FLT_MAX: bf16 infinity
    0x38800000,  # 2^-14, the smallest normal half
    0x387fc000,  # just under it: a half subnormal
    0x33800000,  # 2^-24, the smallest half subnormal
    0x33000000,  # 2^-25: a tie, to even (zero)
    0x33c00000,  # 1.5 * 2^-24: a tie, to even (2^-23)
    0x33400000,  # 0.75 * 2^-24: rounds up to 2^-24
    0x2f800000,  # far below: zero
    0x7f800000, 0xff800000,  # infinities
    0x3eaaaaab, 0xc2f6e979, 0x40490fdb, 0x3dcccccd, 0xbe4ccccd,
]


def main():
    conv = torch.from_numpy(np.array(CONVERT_BITS, dtype=np.uint32)
                            .view(np.float32).copy())
    tensors = {
        "b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)
                    * 0.5 - 1,
        "a.bias": torch.tensor([1.0, 2.0, 3.0]),
        "scalar": torch.tensor(42.5),
        "empty": torch.zeros((0, 3)),
        "ids": torch.arange(5, dtype=torch.int64).reshape(1, 5),
        NAME_ODD: torch.tensor([7.0]),
        "conv.bf16": conv.to(torch.bfloat16),
        "conv.f16": conv.to(torch.float16),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata={"format": "pt"})
    with safe_open(OUT, "pt") as f:
        assert f.metadata() == {"format": "pt"}
        for k, v in tensors.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype and got.shape == v.shape, k
            assert got.numpy().tobytes() == v.numpy().tobytes() \
                if v.dtype != torch.bfloat16 \
                else torch.equal(got.view(torch.int16), v.view(torch.int16)), k
    print("wrote %s (%d bytes)" % (OUT, os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
