#!/usr/bin/env python3
"""Golden fixture for common/half.c: fp32 -> bf16 and fp32 -> fp16 as torch does it.

Run with the reference virtualenv (torch; e.g. /work/venv-ref, see
tools/reference/setup_venv.sh where present):

    /work/venv-ref/bin/python tools/reference/make_half_fixtures.py

Writes tests/golden/half/f32_to_16.txt: '#' comment lines (library versions,
format), then one line per input, three hex words:

    <fp32 bits, 8 hex> <bf16 bits, 4 hex> <fp16 bits, 4 hex>

The 16-bit results come from torch.Tensor.to(torch.bfloat16) and
.to(torch.float16) on CPU; the input is converted as one tensor, so torch's
vectorized path does the work (its scalar path rounds the same way, RNE). The
inputs are edge values (zeros, infinities, NaNs, FLT_MAX, fp32 subnormals, the
fp16 overflow and underflow boundaries, exact ties and their neighbours for
both formats) followed by random bit patterns and random normal values at many
scales, from a fixed seed.
"""
import os
import struct
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "half", "f32_to_16.txt")


def bits_of(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def edge_bits():
    e = []
    for b in (0x00000000, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FBFFFFF, 0x7FFFFFFF,
              0x7F7FFFFF, 0x00800000, 0x00000001, 0x007FFFFF, 0x00400000, 0x3F800000):
        e += [b, b | 0x80000000]
    # fp16 boundaries: 65504 (max), 65519.996, 65520 (tie -> inf), 2^-14 (min
    # normal), 2^-24 (min subnormal), 2^-25 (tie -> 0), and their fp32 neighbours.
    for x in (65504.0, 65520.0, 2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25,
              1.5 * 2.0 ** -24, 2.0 ** -15, 65536.0, 1.0 / 3.0):
        b = bits_of(x)
        for d in (-2, -1, 0, 1, 2):
            e += [b + d, (b + d) | 0x80000000]
    # Ties for bf16 (low 16 bits 0x8000) with even and odd kept part, and
    # their neighbours; ties for fp16 normals (low 13 bits 0x1000).
    for hi in (0x3F80, 0x3F81, 0x4049, 0x7F7F, 0x0001, 0x0080, 0xC2F7):
        for lo in (0x7FFF, 0x8000, 0x8001, 0x0000, 0xFFFF):
            e.append((hi << 16) | lo)
    for base in (0x3F800000, 0x3F802000, 0x40490000, 0x47000000, 0x38800000, 0x38802000):
        for lo in (0x0FFF, 0x1000, 0x1001):
            e += [base | lo, (base | lo) | 0x80000000]
    # fp16 subnormal ties: k + 1/2 units of 2^-24 for even and odd k.
    for k in (0, 1, 2, 3, 510, 511, 1022, 1023):
        b = bits_of((k + 0.5) * 2.0 ** -24)
        for d in (-1, 0, 1):
            e.append(b + d)
    return e


def main():
    rng = np.random.default_rng(20261125)
    vals = edge_bits()
    vals += [int(v) for v in rng.integers(0, 2 ** 32, size=1500, dtype=np.uint64)]
    scales = 2.0 ** rng.integers(-30, 20, size=1500)
    normal = (rng.standard_normal(1500) * scales).astype(np.float32)
    vals += [int(v) for v in normal.view(np.uint32)]

    u = np.array(vals, dtype=np.uint32)
    t = torch.from_numpy(u.view(np.float32).copy())
    bf = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    hf = t.to(torch.float16).view(torch.int16).numpy().view(np.uint16)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("# fp32 -> bf16 / fp16 by torch.Tensor.to on CPU; made by "
                "tools/reference/make_half_fixtures.py\n")
        f.write("# torch %s, numpy %s, python %s\n" % (
            torch.__version__, np.__version__, sys.version.split()[0]))
        f.write("# columns: fp32 bits, bf16 bits, fp16 bits (hex); %d rows\n" % len(u))
        for a, b, c in zip(u, bf, hf):
            f.write("%08x %04x %04x\n" % (a, b, c))
    print("wrote %s (%d rows)" % (OUT, len(u)))


if __name__ == "__main__":
    main()
