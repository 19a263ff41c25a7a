#!/usr/bin/env python3
"""Checks files written by qlora-train's C safetensors writer with the
reference Python reader and writer (a manual check, not run in CI).

    /work/venv-ref/bin/python tools/reference/check_c_writer.py
        checks tests/golden/safetensors/c_written.safetensors (written by
        tests/safetensors/test_st_roundtrip.c, test_c_written_golden)
    QT_ST_DUMP_DIR=/tmp/d build/tests/safetensors/test_st_roundtrip
    /work/venv-ref/bin/python tools/reference/check_c_writer.py --dump /tmp/d
        checks every random case the property test wrote, against the
        per-tensor SHA-256 manifest the C test wrote beside it

    /work/venv-ref/bin/python tools/reference/check_c_writer.py \
        --reader-diff build/tests/safetensors/st_verdict [--mutants 20000]
        differential test of the READER: mutates the golden safetensors files
        (byte changes, inserted JSON tokens, deletions, length-field edits) and
        asks both the C reader (st_verdict) and safetensors.deserialize for a
        verdict; every disagreement must be one of qlora-train's deliberate,
        documented differences (common/safetensors.h: duplicate names or
        metadata keys, rank > 8, a dimension > 2^63-1, U+0000 in a name)

For each file: safetensors.deserialize (the reference reader, which applies
all its validation rules) must accept it and return the expected names,
dtypes, shapes and bytes; and, where the reference writer can express the
file (no F6 dtypes, no F4 tensor with an odd last dimension, at most one
metadata key, since it orders metadata keys through a HashMap), re-serializing the deserialized tensors with
safetensors.serialize must reproduce the file byte for byte.
Exit status 0 when every check passes.
"""
import argparse
import ctypes
import glob
import hashlib
import json
import os
import sys

import safetensors
from safetensors import TensorSpec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYNAME = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32",
    "F32": "float32", "C64": "complex64", "F64": "float64", "I64": "int64", "U64": "uint64",
    "F4": "float4_e2m1fn_x2",
}


def header_metadata(blob):
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n].decode("utf-8")).get("__metadata__") or {}


def reserialize(tensors, metadata):
    keep, specs = [], {}
    for name, t in tensors:
        data = bytes(t["data"])
        buf = ctypes.create_string_buffer(data, max(len(data), 1))
        keep.append(buf)
        shape = list(t["shape"])
        if t["dtype"] == "F4":
            shape[-1] //= 2  # the Python spec takes the packed storage shape
        specs[name] = TensorSpec(dtype=PYNAME[t["dtype"]], shape=shape, data_ptr=ctypes.addressof(buf),
                                 data_len=len(data))
    return bytes(safetensors.serialize(specs, metadata=metadata or None))


def check_file(path, expected):
    """expected: {name: (dtype, shape, bytes-or-sha256-hex)}. Returns a list of problems."""
    with open(path, "rb") as f:
        blob = f.read()
    problems = []
    try:
        tensors = safetensors.deserialize(blob)
    except Exception as e:
        return ["reference reader rejects it: %s" % e]
    got = dict(tensors)
    if set(got) != set(expected):
        problems.append("names differ: %r vs %r" % (sorted(got), sorted(expected)))
    for name, (dt, shape, want) in expected.items():
        t = got.get(name)
        if t is None:
            continue
        data = bytes(t["data"])
        if t["dtype"] != dt or list(t["shape"]) != list(shape):
            problems.append("%r: %s %s, expected %s %s" % (name, t["dtype"], t["shape"], dt, shape))
        ok = (data == want) if isinstance(want, bytes) else (hashlib.sha256(data).hexdigest() == want)
        if not ok:
            problems.append("%r: bytes differ" % name)
    meta = header_metadata(blob)
    # The Python spec takes F4 as packed pairs along the last axis, so it cannot
    # express an F4 tensor whose last dimension is odd (or a rank-0 one).
    expressible = all(t["dtype"] in PYNAME and (t["dtype"] != "F4" or (t["shape"] and t["shape"][-1] % 2 == 0))
                      for _, t in tensors)
    if expressible and len(meta) <= 1:
        if reserialize(tensors, meta) != blob:
            problems.append("the reference writer does not reproduce the file byte for byte")
        else:
            check_file.identical += 1
    return problems


check_file.identical = 0


def expected_golden(path):
    """The fixed input of test_c_written_golden: byte k of tensor j is (131 j + 29 k + 7) mod 256;
    names start with tJJ_. Dtype and shape come from the file (they are checked by the C test)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    exp = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        j = int(name[1:3])
        nbytes = info["data_offsets"][1] - info["data_offsets"][0]
        exp[name] = (info["dtype"], info["shape"], bytes((131 * j + 29 * k + 7) & 0xff for k in range(nbytes)))
    assert header.get("__metadata__") == {"format": "pt"}, header.get("__metadata__")
    assert len(exp) == 23, len(exp)
    return exp


# Substrings of the C reader's messages for its deliberate differences from the reference.
KNOWN_DIFFERENCES = ("duplicate tensor name", "duplicate \"__metadata__\" key", "contains U+0000",
                     "beyond 2^63-1", "more than 8 dimensions")


def reader_diff(verdict_bin, n_mutants, seed=7):
    import random
    import struct
    import subprocess
    import tempfile
    rng = random.Random(seed)
    g = os.path.join(ROOT, "tests", "golden", "safetensors")
    seeds = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(g, "*.safetensors")) +
                                                    glob.glob(os.path.join(g, "good", "*.safetensors")) +
                                                    glob.glob(os.path.join(g, "bad", "*.safetensors")))]
    toks = [b'"dtype"', b'"shape"', b'"data_offsets"', b'"__metadata__"', b'"F4"', b'"F6_E2M3"', b'"U8"', b"0",
            b"1", b"-", b".", b"e", b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\\u0000", b" ", b"\t",
            b"null", b"18446744073709551615", b"9007199254740993", b"\x00", b"\xff", b"\xc3\xa9"]
    agree = known = unexpected = 0
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(n_mutants):
            b = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                if len(b) <= 8:
                    break
                op, p = rng.randrange(5), rng.randrange(8, len(b))
                if op == 0:
                    b[p] = rng.randrange(256)
                elif op == 1:
                    b[p:p] = rng.choice(toks)
                elif op == 2:
                    del b[p:p + rng.randint(1, 8)]
                elif op == 3:
                    n = int.from_bytes(b[:8], "little")
                    b[:8] = struct.pack("<Q", max(0, n + rng.randint(-3, 3)))
                else:  # re-sync N with the last '}' so that edits reach the later rules
                    j = b.rfind(b"}", 8, 8 + int.from_bytes(b[:8], "little") + 16)
                    if j > 0:
                        b[:8] = struct.pack("<Q", j - 8 + 1)
            p = os.path.join(d, "m%06d" % i)
            with open(p, "wb") as f:
                f.write(b)
            paths.append(p)
        lines = []
        for k in range(0, len(paths), 2000):
            out = subprocess.run([verdict_bin] + paths[k:k + 2000], capture_output=True, check=True).stdout
            lines += out.decode("utf-8", "replace").splitlines()
        assert len(lines) == len(paths), (len(lines), len(paths))
        for p, line in zip(paths, lines):
            c_ok = line.startswith("OK ")
            try:
                safetensors.deserialize(open(p, "rb").read())
                r_ok, r = True, "accepts"
            except Exception as e:
                r_ok, r = False, str(e)
            if c_ok == r_ok:
                agree += 1
            elif not c_ok and any(s in line for s in KNOWN_DIFFERENCES):
                known += 1
            else:
                unexpected += 1
                print("DIFFER %s: C: %s | reference: %s" % (os.path.basename(p), line[:200], r[:200]))
    print("reader-diff: %d mutants, %d same verdict, %d known differences, %d unexpected"
          % (n_mutants, agree, known, unexpected))
    return 1 if unexpected else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", help="directory of case_NNN.safetensors + case_NNN.json from QT_ST_DUMP_DIR")
    ap.add_argument("--reader-diff", metavar="ST_VERDICT", help="path of the st_verdict helper binary")
    ap.add_argument("--mutants", type=int, default=20000)
    args = ap.parse_args()
    if args.reader_diff:
        return reader_diff(args.reader_diff, args.mutants)
    failures, checked = 0, 0
    if args.dump:
        for js in sorted(glob.glob(os.path.join(args.dump, "case_*.json"))):
            with open(js) as f:
                man = json.load(f)
            exp = {bytes.fromhex(t["name_hex"]).decode("utf-8"): (t["dtype"], t["shape"], t["sha256"])
                   for t in man["tensors"]}
            p = js[:-5] + ".safetensors"
            probs = check_file(p, exp)
            checked += 1
            if probs:
                failures += 1
                print("FAIL %s: %s" % (p, "; ".join(probs)))
    else:
        p = os.path.join(ROOT, "tests", "golden", "safetensors", "c_written.safetensors")
        probs = check_file(p, expected_golden(p))
        checked += 1
        if probs:
            failures += 1
            print("FAIL %s: %s" % (p, "; ".join(probs)))
    print("check_c_writer: %d file(s) checked with safetensors %s, %d failed, %d byte-identical to the "
          "reference writer" % (checked, safetensors.__version__, failures, check_file.identical))
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
