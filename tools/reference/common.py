"""Shared helpers for the fixture scripts in tools/reference/.

Fixtures live under tests/golden/<area>/ and each one gets a <name>.meta.json
recording the versions of the reference libraries that produced it, so a
changed golden can be traced to a library upgrade. Run the scripts with the
reference virtualenv (tools/reference/setup_venv.sh; on the team machine
/work/venv-ref/bin/python).
"""
import importlib
import json
import os
import platform

_LIBS = ("torch", "transformers", "peft", "bitsandbytes", "tokenizers", "safetensors", "numpy")


def golden_dir(area):
    """tests/golden/<area>/ of this repository (created if missing)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    d = os.path.join(root, "tests", "golden", area)
    os.makedirs(d, exist_ok=True)
    return d


def library_versions():
    """{library: version} for every reference library that imports here."""
    out = {}
    for name in _LIBS:
        try:
            mod = importlib.import_module(name)
        except Exception:  # not installed, or fails to import without a GPU
            continue
        out[name] = getattr(mod, "__version__", "unknown")
    return out


def write_meta(area, name, extra=None):
    """Writes tests/golden/<area>/<name>.meta.json: library versions, the Python
    version, the generating script, plus the caller's `extra` dict. Returns the path."""
    meta = {
        "fixture": name,
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
    if extra:
        meta.update(extra)
    path = os.path.join(golden_dir(area), name + ".meta.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    return path
