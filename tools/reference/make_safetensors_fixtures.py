#!/usr/bin/env python3
"""Writes the safetensors golden fixtures under tests/golden/safetensors/.

Run with the reference virtualenv (tools/reference/setup_venv.sh; on the team
machine /work/venv-ref/bin/python):

    /work/venv-ref/bin/python tools/reference/make_safetensors_fixtures.py

Everything is deterministic (fixed seeds), so re-running it rewrites the same
bytes unless a library changed. Outputs (each described by a .meta.json that
also records the library versions, see common.py):

  py_all_dtypes.safetensors  every dtype the Python `safetensors` writer accepts
                             (20 of 22), random bytes, ranks 0-4, zero-sized
                             tensors, __metadata__ {"format": "pt"}; written by
                             safetensors.serialize (the reference writer).
  py_floats.safetensors      F32/F16/BF16/F64 values incl. +-0, +-inf, a quiet
                             NaN, subnormals; meta has the SHA-256 of torch's
                             .float() of each, to check qt_st_entry_to_f32.
  py_empty.safetensors       no tensors at all.
  tiny_llama/                a tiny random LlamaForCausalLM (bf16) saved by
                             transformers save_pretrained with a small
                             max_shard_size: >= 2 shards + index JSON.
  good/*.safetensors         hand-built positive cases (whitespace padding,
                             unaligned data, F6, unknown fields, escapes, ...),
                             each checked to be ACCEPTED by the reference reader.
  bad/*.safetensors          the negative corpus: one violation per file, with
                             the substring qlora-train's error must contain; each
                             is also fed to the reference reader and its verdict
                             recorded (a few are accepted by the reference: see
                             "reference" in bad.meta.json; those are deliberate
                             differences, documented in common/safetensors.h).
"""
import ctypes
import hashlib
import json
import os
import random
import shutil
import struct
import sys

import numpy as np
import safetensors
import torch
from safetensors import TensorSpec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_dir, write_meta  # noqa: E402

AREA = "safetensors"
OUT = golden_dir(AREA)

# safetensors dtype -> (bits, name accepted by the Python TensorSpec or None)
DTYPES = {
    "BOOL": (8, "bool"), "U8": (8, "uint8"), "I8": (8, "int8"),
    "F8_E5M2": (8, "float8_e5m2"), "F8_E4M3": (8, "float8_e4m3fn"), "F8_E8M0": (8, "float8_e8m0fnu"),
    "F8_E4M3FNUZ": (8, "float8_e4m3fnuz"), "F8_E5M2FNUZ": (8, "float8_e5m2fnuz"),
    "I16": (16, "int16"), "U16": (16, "uint16"), "F16": (16, "float16"), "BF16": (16, "bfloat16"),
    "I32": (32, "int32"), "U32": (32, "uint32"), "F32": (32, "float32"),
    "C64": (64, "complex64"), "F64": (64, "float64"), "I64": (64, "int64"), "U64": (64, "uint64"),
    "F4": (4, "float4_e2m1fn_x2"), "F6_E2M3": (6, None), "F6_E3M2": (6, None),
}


def sha(b):
    return hashlib.sha256(bytes(b)).hexdigest()


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def ref_serialize(tensors, metadata=None):
    """The reference writer on raw bytes: tensors = [(name, dtype, shape, bytes)].
    F4 goes in as float4_e2m1fn_x2 with the storage shape (last dim halved)."""
    keep = []
    specs = {}
    for name, dt, shape, data in tensors:
        buf = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
        keep.append(buf)
        pyname = DTYPES[dt][1]
        sshape = list(shape)
        if dt == "F4":
            assert sshape and sshape[-1] % 2 == 0
            sshape[-1] //= 2
        specs[name] = TensorSpec(dtype=pyname, shape=sshape, data_ptr=ctypes.addressof(buf), data_len=len(data))
    out = safetensors.serialize(specs, metadata=metadata)
    del keep
    return bytes(out)


def ref_verdict(blob):
    """('accepts', tensors) or ('rejects', message) from the reference reader."""
    try:
        return "accepts", safetensors.deserialize(blob)
    except Exception as e:  # SafetensorError and deserialisation errors
        return "rejects", str(e)


def tensor_record(name, dt, shape, begin, end, data):
    return {"name": name, "dtype": dt, "shape": list(shape), "begin": begin, "end": end, "sha256": sha(data)}


def raw_file(header, data=b"", n=None):
    """8-byte LE length + header bytes + data. n overrides the length field."""
    if isinstance(header, str):
        header = header.encode("utf-8")
    return struct.pack("<Q", len(header) if n is None else n) + header + data


def write(rel, blob):
    p = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(blob)


# ---------------------------------------------------------------------------
def make_py_all_dtypes(rng):
    tensors = []
    shapes = [[], [0], [3], [2, 4], [1, 0, 5], [2, 3, 2], [1, 2, 2, 3], [4, 1, 1, 2]]
    for i, (dt, (bits, pyname)) in enumerate(DTYPES.items()):
        if pyname is None:
            continue
        for j in range(2):
            shape = list(shapes[(3 * i + 5 * j) % len(shapes)])
            if dt == "F4" and (not shape or shape[-1] % 2):
                shape = shape[:-1] + [2] if shape else [2]
                shape = [2, 2] if j else [4]
            nbytes = numel(shape) * bits // 8
            data = bytes(rng.getrandbits(8) for _ in range(nbytes))
            tensors.append(("layer.%d.%s.%s" % (j, dt.lower(), "w" if j else "b"), dt, shape, data))
    rng.shuffle(tensors)
    blob = ref_serialize(tensors, metadata={"format": "pt"})
    write("py_all_dtypes.safetensors", blob)
    verdict, parsed = ref_verdict(blob)
    assert verdict == "accepts"
    by = {n: d for n, d in parsed}
    recs = []
    for name, dt, shape, data in sorted(tensors):
        assert bytes(by[name]["data"]) == data and by[name]["dtype"] == dt and list(by[name]["shape"]) == shape
        recs.append({"name": name, "dtype": dt, "shape": shape, "sha256": sha(data)})
    write_meta(AREA, "py_all_dtypes", {
        "file": "py_all_dtypes.safetensors", "file_sha256": sha(blob), "writer": "safetensors.serialize",
        "metadata": {"format": "pt"}, "tensors": recs})


def make_py_floats():
    torch.manual_seed(1)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40, -3e-39, 1.0,
                            65504.0, 6.1e-5, 5.96e-8, -2.5], dtype=torch.float64)
    srcs = {
        "f32": torch.cat([special, torch.randn(37, dtype=torch.float64)]).to(torch.float32).reshape(7, 7),
        "f16": torch.cat([special, torch.randn(20, dtype=torch.float64)]).to(torch.float16).reshape(2, 16),
        "bf16": torch.cat([special, torch.randn(52, dtype=torch.float64)]).to(torch.bfloat16).reshape(4, 4, 4),
        "f64": torch.cat([special, torch.randn(9, dtype=torch.float64) * 1e30,
                          torch.tensor([3.4028235677973366e38, 1e-46])]).reshape(23),
        "scalar_bf16": torch.tensor(-1.75, dtype=torch.bfloat16),
    }
    from safetensors.torch import save
    blob = save(srcs, metadata={"format": "pt"})
    write("py_floats.safetensors", blob)
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
    recs = []
    for k in sorted(srcs):
        t = srcs[k].contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dim() else t.reshape(1).view(torch.uint8).numpy().tobytes()
        recs.append({"name": k, "dtype": names[t.dtype], "shape": list(t.shape), "sha256": sha(raw),
                     "f32_sha256": sha(t.float().reshape(-1).numpy().tobytes())})
    write_meta(AREA, "py_floats", {"file": "py_floats.safetensors", "writer": "safetensors.torch.save",
                                   "metadata": {"format": "pt"}, "tensors": recs,
                                   "note": "f32_sha256 = SHA-256 of torch .float() of the tensor (C order)"})


def make_py_empty():
    blob = ref_serialize([])
    write("py_empty.safetensors", blob)
    assert ref_verdict(blob)[0] == "accepts"
    write_meta(AREA, "py_empty", {"file": "py_empty.safetensors", "file_sha256": sha(blob), "tensors": []})


def make_tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    d = os.path.join(OUT, "tiny_llama")
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, max_shard_size="8KB")
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        wm = json.load(f)["weight_map"]
    shards = sorted(set(wm.values()))
    assert len(shards) >= 2, shards
    sd = model.state_dict()
    recs = []
    for name in sorted(wm):
        t = sd[name].detach().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        recs.append({"name": name, "dtype": "BF16", "shape": list(t.shape), "shard": wm[name], "sha256": sha(raw)})
    total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    write_meta(AREA, "tiny_llama", {"dir": "tiny_llama", "writer": "transformers save_pretrained(max_shard_size=8KB)",
                                    "shards": shards, "total_bytes": total, "tensors": recs})


# ---------------------------------------------------------------------------
def entry(dt, shape, b, e, extra=""):
    return '{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]%s}' % (dt, json.dumps(shape).replace(" ", ""), b, e, extra)


def make_good(rng):
    """Positive corpus: each accepted by the reference reader and by qlora-train."""
    cases = []

    def add(name, header, data, tensors, metadata=None, n=None):
        blob = raw_file(header, data, n)
        verdict, parsed = ref_verdict(blob)
        assert verdict == "accepts", (name, parsed)
        got = {k: v for k, v in parsed}
        for t in tensors:
            assert bytes(got[t["name"]]["data"]) == data[t["begin"]:t["end"]], name
        write("good/%s.safetensors" % name, blob)
        cases.append({"file": "good/%s.safetensors" % name, "tensors": tensors, "metadata": metadata or {}})

    def rnd(k):
        return bytes(rng.getrandbits(8) for _ in range(k))

    d = rnd(12)
    add("zero_sized", '{"empty":%s,"x":%s}' % (entry("F32", [0, 4], 0, 0), entry("F32", [3], 0, 12)), d,
        [tensor_record("empty", "F32", [0, 4], 0, 0, b""), tensor_record("x", "F32", [3], 0, 12, d)])
    d = rnd(8)
    add("rank0", '{"s":%s}' % entry("F64", [], 0, 8), d, [tensor_record("s", "F64", [], 0, 8, d)])
    d = rnd(4)
    add("leading_whitespace", ' \n\t\r {"a":%s}' % entry("I32", [1], 0, 4), d, [tensor_record("a", "I32", [1], 0, 4, d)])
    d = rnd(2)
    add("trailing_whitespace", '{"a":%s}     \n\t' % entry("BF16", [1], 0, 2), d,
        [tensor_record("a", "BF16", [1], 0, 2, d)])
    # N = 6: the data buffer starts at file byte 14 (reference test_whitespace_padded_header).
    d = rnd(0)
    add("n6_unaligned", '{}    ', d, [])
    d = rnd(6)
    hdr = '{"u":%s}' % entry("I16", [3], 0, 6)
    hdr += " " * (1 if (8 + len(hdr)) % 2 == 0 else 0)  # odd data start
    add("unaligned_data", hdr, d, [tensor_record("u", "I16", [3], 0, 6, d)])
    # All 22 dtypes, including the sub-byte F4/F6 with whole-byte counts.
    parts, recs, data, off = [], [], b"", 0
    for i, (dt, (bits, _)) in enumerate(DTYPES.items()):
        shape = [2, 4] if bits < 8 else [i % 3 + 1, 2]
        nb = numel(shape) * bits // 8
        chunk = rnd(nb)
        parts.append('"%s_t":%s' % (dt, entry(dt, shape, off, off + nb)))
        recs.append(tensor_record(dt + "_t", dt, shape, off, off + nb, chunk))
        data += chunk
        off += nb
    add("all_dtypes", "{" + ",".join(parts) + "}", data, recs)
    d = rnd(1)
    add("metadata", '{"__metadata__":{"format":"pt","note":"caf\\u00e9 \\"q\\""},"m":%s}' % entry("U8", [1], 0, 1), d,
        [tensor_record("m", "U8", [1], 0, 1, d)], metadata={"format": "pt", "note": 'caf\u00e9 "q"'})
    d = rnd(1)
    add("metadata_null", '{"__metadata__":null,"m":%s}' % entry("U8", [1], 0, 1), d,
        [tensor_record("m", "U8", [1], 0, 1, d)])
    d = rnd(2)
    add("case_variants", '{"a":%s,"A":%s}' % (entry("U8", [1], 0, 1), entry("U8", [1], 1, 2)), d,
        [tensor_record("a", "U8", [1], 0, 1, d[:1]), tensor_record("A", "U8", [1], 1, 2, d[1:])])
    d = rnd(4)
    add("unknown_field", '{"x":%s}' % entry("F32", [1], 0, 4, ',"extra":{"k":[1,2.5,null,true,"s"]}'), d,
        [tensor_record("x", "F32", [1], 0, 4, d)])
    d = rnd(2)
    add("escaped_names", '{"a\\/b\\n\\u00e9\\ud83d\\ude00":%s,"\\u0041\\t":%s}' % (entry("U8", [1], 0, 1), entry("U8", [1], 1, 2)),
        d, [tensor_record("a/b\n\u00e9\U0001F600", "U8", [1], 0, 1, d[:1]), tensor_record("A\t", "U8", [1], 1, 2, d[1:])])
    d = rnd(3)
    add("reordered_entries", '{"z":%s,"y":%s}' % (entry("U8", [2], 1, 3), entry("U8", [1], 0, 1)), d,
        [tensor_record("z", "U8", [2], 1, 3, d[1:]), tensor_record("y", "U8", [1], 0, 1, d[:1])])
    d = rnd(4)
    add("field_order", '{"w":{"data_offsets":[0,4],"shape":[2],"dtype":"U16"}}', d,
        [tensor_record("w", "U16", [2], 0, 4, d)])
    add("empty_header", '{}', b"", [])
    write_meta(AREA, "good", {"cases": cases})
    return len(cases)


def make_bad():
    """Negative corpus: (name, bytes, expected substring, status)."""
    U8 = lambda b, e, shape=None: entry("U8", shape if shape is not None else [e - b], b, e)  # noqa: E731
    ok1 = '{"t":%s}' % U8(0, 4)
    cases = [
        ("empty", b"", "shorter than the 8-byte header length field (rule 1)"),
        ("seven_bytes", b"\x02\x00\x00\x00\x00\x00\x00", "shorter than the 8-byte header length field (rule 1)"),
        ("n_beyond_eof", struct.pack("<Q", 0x3c), "runs past the end of the 8-byte file (rule 3)"),
        ("n_huge", struct.pack("<Q", 0xffffffffffff0000) + b"{}", "exceeds the 100000000-byte limit (rule 2)"),
        ("n_100000001", struct.pack("<Q", 100000001) + b"{}      ", "header length 100000001 exceeds"),
        ("n_zero", raw_file(b""), "header is empty or only whitespace"),
        ("brace_alone", raw_file(b"{"), "unexpected end of header"),
        ("n_too_small", raw_file(ok1, b"abcd", n=len(ok1) - 1) + b"}", "unexpected end of header"),
        ("n_too_large", raw_file(ok1 + "\x01abcd", b"", n=len(ok1) + 1), "trailing characters after the JSON object"),
        ("non_utf8", raw_file(b'{"t\xff":' + U8(0, 4).encode() + b"}", b"abcd"), "not valid UTF-8 at header byte 3 (rule 4)"),
        ("non_utf8_overlong", raw_file(b'{"\xc0\xaf":' + U8(0, 4).encode() + b"}", b"abcd"), "not valid UTF-8"),
        ("non_utf8_surrogate", raw_file(b'{"\xed\xa0\x80":' + U8(0, 4).encode() + b"}", b"abcd"), "not valid UTF-8"),
        ("not_json", raw_file("hello world!"), "the header is not a JSON object"),
        ("header_is_array", raw_file("[]"), "the header is not a JSON object"),
        ("trailing_bytes_polyglot", raw_file(ok1, b"abcd" + b"extra_bogus_data_for_polyglot_file"),
         "34 trailing bytes after the last tensor"),
        ("one_byte_short", raw_file(ok1, b"abc"), "file is truncated: tensors need 4 data bytes but only 3"),
        ("invalid_info", raw_file('{"t":%s}' % entry("I32", [2, 2], 0, 4), b"abcd"),
         "span 4 bytes but I32 [2, 2] needs 16 (rule 9)"),
        ("shape_overflow", raw_file('{"t":%s}' % entry("F32", [2, 18446744073709551614], 0, 4), b"abcd"),
         "element count overflows 64 bits (rule 7)"),
        ("bits_overflow", raw_file('{"t":%s}' % entry("F64", [4611686018427387904], 0, 4), b"abcd"),
         "bit count overflows 64 bits (rule 7)"),
        ("json_attack_overlap", raw_file("{" + ",".join('"t%d":%s' % (i, entry("F32", [4], 0, 16)) for i in range(10)) + "}",
                                         bytes(16)), "overlap the previous tensor"),
        ("gap", raw_file('{"a":%s,"b":%s}' % (U8(0, 4), U8(8, 12)), bytes(12)), "leave a gap of 4 unindexed bytes"),
        ("first_not_at_zero", raw_file('{"a":%s}' % U8(4, 8), bytes(8)), "leave a gap of 4 unindexed bytes"),
        ("begin_after_end", raw_file('{"a":%s}' % entry("U8", [4], 4, 0), bytes(4)), "data_offsets begin 4 is after end 0"),
        ("negative_offset", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[-1,3]}}', bytes(4)),
         "data_offsets value -1 is not a non-negative integer"),
        ("float_offset", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4.0]}}', bytes(4)),
         "data_offsets value 4.0 is not a non-negative integer"),
        ("exp_offset_1e300", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,1e300]}}', bytes(4)),
         "data_offsets value 1e300 is not a non-negative integer"),
        ("float_shape", raw_file('{"a":{"dtype":"U8","shape":[4.0],"data_offsets":[0,4]}}', bytes(4)),
         "shape value 4.0 is not a non-negative integer"),
        ("offset_above_2p53", raw_file('{"a":%s}' % entry("U8", [9007199254740993], 0, 9007199254740993), bytes(4)),
         "data_offsets value 9007199254740993 exceeds 2^53"),
        ("offset_beyond_u64", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,18446744073709551616]}}', bytes(4)),
         "data_offsets value 18446744073709551616 does not fit in 64 bits"),
        ("duplicate_identical", raw_file('{"a":%s,"a":%s}' % (U8(0, 4), U8(0, 4)), bytes(4)), "duplicate tensor name 'a'"),
        ("duplicate_different_offsets", raw_file('{"a":%s,"a":%s}' % (U8(0, 4), U8(4, 8)), bytes(8)),
         "duplicate tensor name 'a'"),
        ("metadata_non_string", raw_file('{"__metadata__":{"format":1},"a":%s}' % U8(0, 4), bytes(4)),
         "\"__metadata__\" value for key 'format' is not a string"),
        ("metadata_nested", raw_file('{"__metadata__":{"format":{"x":"y"}},"a":%s}' % U8(0, 4), bytes(4)),
         "\"__metadata__\" value for key 'format' is not a string"),
        ("metadata_array", raw_file('{"__metadata__":["pt"],"a":%s}' % U8(0, 4), bytes(4)),
         "\"__metadata__\" is not an object of strings"),
        ("metadata_duplicate_key", raw_file('{"__metadata__":{"k":"1","k":"2"},"a":%s}' % U8(0, 4), bytes(4)),
         "duplicate \"__metadata__\" key 'k'"),
        ("metadata_twice", raw_file('{"__metadata__":{},"__metadata__":{},"a":%s}' % U8(0, 4), bytes(4)),
         "duplicate \"__metadata__\" entry"),
        ("unknown_dtype", raw_file('{"a":%s}' % entry("F128", [1], 0, 16), bytes(16)), "unknown dtype 'F128'"),
        ("dtype_lowercase", raw_file('{"a":%s}' % entry("f32", [1], 0, 4), bytes(4)), "unknown dtype 'f32'"),
        ("dtype_not_string", raw_file('{"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}', bytes(4)),
         "\"dtype\" is not a string"),
        ("shape_not_array", raw_file('{"a":{"dtype":"U8","shape":4,"data_offsets":[0,4]}}', bytes(4)),
         "\"shape\" is not an array"),
        ("shape_entry_string", raw_file('{"a":{"dtype":"U8","shape":["4"],"data_offsets":[0,4]}}', bytes(4)),
         "shape entry is not an integer"),
        ("offsets_three", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4,8]}}', bytes(4)),
         "\"data_offsets\" has more than 2 entries"),
        ("offsets_one", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[4]}}', bytes(4)),
         "\"data_offsets\" has 1 entries, needs 2"),
        ("missing_data_offsets", raw_file('{"a":{"dtype":"U8","shape":[4]}}', bytes(4)), "missing field \"data_offsets\""),
        ("missing_dtype", raw_file('{"a":{"shape":[4],"data_offsets":[0,4]}}', bytes(4)), "missing field \"dtype\""),
        ("missing_shape", raw_file('{"a":{"dtype":"U8","data_offsets":[0,4]}}', bytes(4)), "missing field \"shape\""),
        ("entry_not_object", raw_file('{"a":[0,4]}', bytes(4)), "tensor 'a': entry is not a JSON object"),
        ("duplicate_field", raw_file('{"a":{"dtype":"U8","dtype":"I8","shape":[4],"data_offsets":[0,4]}}', bytes(4)),
         "duplicate field \"dtype\""),
        ("nesting_10000", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"x":%s%s}}' % ("[" * 10000, "]" * 10000),
                                   bytes(4)), "nests deeper than 16 levels"),
        ("f4_odd_count", raw_file('{"a":%s}' % entry("F4", [3], 0, 2), bytes(2)), "3 elements of F4 (4 bits each) do not fill whole bytes (rule 8)"),
        ("f6_odd_count", raw_file('{"a":%s}' % entry("F6_E2M3", [3], 0, 3), bytes(3)), "3 elements of F6_E2M3 (6 bits each) do not fill whole bytes"),
        ("control_char_in_name", raw_file(b'{"a\x01":' + U8(0, 4).encode() + b"}", bytes(4)), "control character in string"),
        ("lone_surrogate", raw_file('{"a\\ud800":%s}' % U8(0, 4), bytes(4)), "lone high surrogate"),
        ("invalid_escape", raw_file('{"a\\x41":%s}' % U8(0, 4), bytes(4)), "invalid escape in string"),
        ("nul_padding", raw_file(ok1.encode() + b"\x00\x00", b"abcd"), "trailing characters after the JSON object"),
        ("leading_zero_number", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[00,4]}}', bytes(4)),
         "expected ',' or ']'"),
        ("trailing_comma", raw_file('{"a":%s,}' % U8(0, 4), bytes(4)), "expected a string"),
        ("unterminated_string", raw_file('{"a'), "unterminated string"),
        ("bool_offset", raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,true]}}', bytes(4)),
         "data_offsets entry is not an integer"),
        # Valid per the reference but beyond what qlora-train represents: QT_ERR_UNSUPPORTED.
        ("rank9", raw_file('{"a":%s}' % entry("U8", [1] * 9, 0, 1), bytes(1)), "shape has more than 8 dimensions", "unsupported"),
        ("dim_beyond_int64", raw_file('{"a":%s}' % entry("U8", [0, 9223372036854775808], 0, 0), b""), "beyond 2^63-1", "unsupported"),
        ("nul_in_name", raw_file('{"a\\u0000b":%s}' % U8(0, 4), bytes(4)), "contains U+0000", "unsupported"),
    ]
    recs = []
    d = os.path.join(OUT, "bad")
    shutil.rmtree(d, ignore_errors=True)
    for i, c in enumerate(cases):
        name, blob, expect = c[0], c[1], c[2]
        status = c[3] if len(c) > 3 else "format"
        if isinstance(blob, str):
            blob = blob.encode()
        fname = "bad/%02d_%s.safetensors" % (i + 1, name)
        write(fname, blob)
        verdict, msg = ref_verdict(blob)
        recs.append({"file": fname, "expect": expect, "status": status,
                     "reference": verdict + ("" if verdict == "accepts" else ": " + msg)})
    write_meta(AREA, "bad", {"cases": recs,
                             "note": "reference = verdict of safetensors.deserialize on the same bytes"})
    return recs


def main():
    rng = random.Random(20260101)
    make_py_all_dtypes(rng)
    make_py_floats()
    make_py_empty()
    make_tiny_llama()
    ngood = make_good(rng)
    bad = make_bad()
    acc = [r["file"] for r in bad if r["reference"] == "accepts"]
    print("good: %d cases; bad: %d cases (%d also rejected by the reference; accepted by it: %s)"
          % (ngood, len(bad), len(bad) - len(acc), ", ".join(acc)))


if __name__ == "__main__":
    main()
