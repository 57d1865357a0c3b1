#!/usr/bin/env python3
"""ROUGE speed, side by side: `dsum-cli score` end to end (process start, CSV reading,
scoring, printing) against pltrdy `rouge` 1.0.1 and Google's `rouge_score` 0.1.2
(whitespace tokenizer) scoring the same 10,000 Korean pairs in-process (their CSV reading
and import not timed, which favours them).

    /work/venv/bin/python tools/bench/rouge_bench.py --dsum target/release/dsum-cli

The pairs are generated from a fixed seed, so every run scores the same texts. Prints a
Markdown table of pairs/s and ratios, and checks that the three agree on the scores.
"""

import argparse
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time

from rouge import Rouge
from rouge_score import rouge_scorer

sys.setrecursionlimit(100_000)

WORDS = ("#Person1#은 #Person2#에게 #Person1#이 #Person2#가 오늘 내일 주말에 회의 일정을 병원 예약을 "
         "가격이 11,500원 3.5시간 친구의 생일 선물을 사고 싶어 한다 했다 말한다 제안한다 거절한다 "
         "동의한다 그리고 하지만 학교 숙제를 영화 표 두 장을 저녁 식사 비용을 택시를 지하철을 "
         "늦었다고 미안하다고 고맙다고 새 노트북을 예산이 부족하다 이사를 집을 보러 간다 면접을 "
         "준비한다 여행 계획을 세운다 비행기 표를 호텔을 예약한다 날씨가 좋다 project deadline").split()


def make_pairs(n, seed=20261125):
    rng = random.Random(seed)

    def summary():
        sents = []
        for _ in range(rng.randint(1, 3)):
            sents.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))))
        return ". ".join(sents) + "."

    out = []
    for _ in range(n):
        ref = summary()
        # predictions share part of the reference, as real model outputs do
        words = ref.split()
        keep = [w for w in words if rng.random() < 0.6]
        hyp = " ".join(keep + [rng.choice(WORDS) for _ in range(rng.randint(0, 8))])
        out.append((hyp, ref))
    return out


def write_csvs(pairs, d):
    pred, ref = os.path.join(d, "pred.csv"), os.path.join(d, "ref.csv")
    with open(pred, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fname", "summary"])
        w.writerows((f"test_{i}", h) for i, (h, _) in enumerate(pairs))
    with open(ref, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fname", "summary"])
        w.writerows((f"test_{i}", r) for i, (_, r) in enumerate(pairs))
    return pred, ref


class Whitespace:
    def tokenize(self, text):
        return text.split()


def cpu_now():
    """CPU seconds (user + system) of this process and its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def best_of(k, fn):
    """(best wall seconds, best CPU seconds, result) over k runs. The machine may be
    shared, so CPU time is the steadier of the two."""
    walls, cpus, out = [], [], None
    for _ in range(k):
        c, t = cpu_now(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(cpu_now() - c)
    return min(walls), min(cpus), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsum", required=True, help="path of the release dsum-cli binary")
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    pairs = make_pairs(a.pairs)
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    with tempfile.TemporaryDirectory() as d:
        pred, ref = write_csvs(pairs, d)
        cmds = {
            "rouge": [a.dsum, "score", "--pred", pred, "--ref", ref, "--json"],
            "rouge-score": [a.dsum, "score", "--pred", pred, "--ref", ref, "--json",
                            "--flavor", "rouge-score", "--tokenize", "whitespace"],
        }

        def run_dsum(cmd, threads):
            env = dict(os.environ)
            if threads:
                env["RAYON_NUM_THREADS"] = str(threads)
            p = subprocess.run(cmd, capture_output=True, check=True, env=env)
            return json.loads(p.stdout)

        res = {}
        for flavor, cmd in cmds.items():
            for threads in [1, None]:
                res[(flavor, threads)] = best_of(a.repeat, lambda: run_dsum(cmd, threads))

    t_pl, c_pl, pl = best_of(1, lambda: Rouge().get_scores(hyps, refs, avg=True))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Whitespace())

    def rs_all():
        out = [scorer.score(r, h) for h, r in pairs]
        return {k: sum(s[k].fmeasure for s in out) / len(out) for k in ["rouge1", "rouge2", "rougeL"]}
    t_rs, c_rs, rs = best_of(1, rs_all)

    # the numbers must agree, or the timing means nothing
    d_pl, d_rs = res[("rouge", 1)][2], res[("rouge-score", 1)][2]
    for m in ["rouge-1", "rouge-2", "rouge-l"]:
        assert abs(d_pl[m]["f"] - pl[m]["f"]) < 1e-12, (m, d_pl[m], pl[m])
    for m, k in [("rouge-1", "rouge1"), ("rouge-2", "rouge2"), ("rouge-l", "rougeL")]:
        assert abs(d_rs[m]["f"] - rs[k]) < 1e-12, (m, d_rs[m], rs[k])

    n = len(pairs)
    cores = os.cpu_count()
    print(f"{n} Korean pairs, {platform.processor() or platform.machine()}, {cores} cores visible; "
          f"dsum best of {a.repeat} process runs, Python one in-process run")
    print()
    print("| scorer | wall (s) | CPU (s) | pairs/s (wall) | dsum speed-up, wall | dsum speed-up, CPU |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [
        ("pltrdy `rouge` 1.0.1 `get_scores(avg=True)`", (t_pl, c_pl), None),
        ("dsum `--flavor rouge`, 1 thread", res[("rouge", 1)], (t_pl, c_pl)),
        ("dsum `--flavor rouge`, all threads", res[("rouge", None)], (t_pl, c_pl)),
        ("`rouge_score` 0.1.2 `RougeScorer.score`, whitespace tokens", (t_rs, c_rs), None),
        ("dsum `--flavor rouge-score --tokenize whitespace`, 1 thread", res[("rouge-score", 1)], (t_rs, c_rs)),
        ("dsum `--flavor rouge-score --tokenize whitespace`, all threads", res[("rouge-score", None)], (t_rs, c_rs)),
    ]
    for name, (t, c, *_), base in rows:
        ratio = f"{base[0] / t:.0f}x | {base[1] / c:.0f}x" if base else "1x | 1x"
        print(f"| {name} | {t:.3f} | {c:.3f} | {n / t:,.0f} | {ratio} |")

if __name__ == "__main__":
    main()
