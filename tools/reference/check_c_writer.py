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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", help="directory of case_NNN.safetensors + case_NNN.json from QT_ST_DUMP_DIR")
    args = ap.parse_args()
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
