#!/usr/bin/env python3
"""Cuts a real modules directory's index files into seeds of the `modules` fuzz target:
each seed holds a slice of modules.dep, modules.builtin, modules.softdep, modules.alias and
modules.builtin.modinfo, NUL-separated, under the target's 16 KiB input size.

    modules-seeds.py MODULES_DIR OUT_DIR
"""
import os
import sys

src, out = sys.argv[1], sys.argv[2]
SLICES = 8
PER_FILE = 3 << 10


def read(name):
    try:
        with open(os.path.join(src, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def slices(data, sep):
    """SLICES pieces spread over the file, each of whole records and at most PER_FILE bytes."""
    recs = data.split(sep)
    step = max(1, len(recs) // SLICES)
    for i in range(SLICES):
        piece, size = [], 0
        for r in recs[i * step:]:
            if size + len(r) + 1 > PER_FILE:
                break
            piece.append(r)
            size += len(r) + 1
        yield sep.join(piece)


files = [("modules.dep", b"\n"), ("modules.builtin", b"\n"), ("modules.softdep", b"\n"),
         ("modules.alias", b"\n"), ("modules.builtin.modinfo", b"\0")]
parts = [list(slices(read(n), sep)) for n, sep in files]
for i in range(SLICES):
    seed = b"\0".join(p[i] for p in parts)
    with open(os.path.join(out, f"real-{i}"), "wb") as f:
        f.write(seed)
