"""SmolLM2-135M side by side (issue 4 item 8): dsum vs transformers (PyTorch, fp32) vs CTranslate2 float32.

Batch 1, greedy, 2 threads each, one 256-token prompt (the same ids for all systems), 128 new tokens.
Best of --rounds for every timed quantity.

  prefill  = time to run the 256-token prompt through the model and pick the first token: for
             PyTorch and CTranslate2 a generate call with 1 new token, timed in process (model loaded,
             one warm-up call before); PyTorch's generate computes the last position's logits only
  decode   = 127 / (T(128 new tokens) - T(1 new token)), i.e. per-token cost of the 127 steps after
             the first one, prompt and (for dsum) process start and model load cancel out.

dsum is timed as whole processes (`dsum-cli generate`): its prefill is T(256-token prompt, 1 new
token) - T(1-token prompt, 1 new token), the second run being process start + GGUF load. It runs
twice: reading the Q4_1/Q8_0 matrices quantized (the default, fused dequantizing matmul) and with
`--dequantize` (every weight decoded to f32 at load, the same f32 weights as the other systems).
"""
import argparse, json, os, subprocess, sys, tempfile, time

import torch

TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined a screw press with movable metal type, oil-based ink and a hand mould for casting "
    "letters. Before that, books in Europe were copied by hand, mostly in monasteries, and a single "
    "Bible could take a scribe more than a year. Printing made books cheaper and faster to produce, "
    "and within fifty years presses were working in more than two hundred cities. The spread of "
    "printed pamphlets helped new ideas travel quickly, from scientific observations to religious "
    "arguments, and it encouraged the standardisation of spelling and grammar in many languages. "
    "Newspapers appeared in the seventeenth century, first as weekly sheets of commercial news and "
    "later as daily papers with reports on politics, wars and the arts. In the nineteenth century, "
    "steam-powered rotary presses and cheap paper made from wood pulp lowered costs again, and "
    "literacy rose across Europe and North America. Public libraries, lending schemes and "
    "inexpensive novels brought reading to working families. In the twentieth century, offset "
    "lithography, phototypesetting and finally desktop publishing changed the trade once more, "
    "and today most text is written, edited and read on screens. Yet the basic idea remains the "
    "same: make many identical copies of a text so that many people can read it. Summarise the "
    "passage above in three sentences, focusing on how printing changed the spread of knowledge."
)


def best(f, rounds):
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


def prompt_ids(hf, n):
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained(hf)(TEXT)["input_ids"]
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def bench_dsum(exe, gguf, ids, new, rounds, threads, extra=()):
    tmp = tempfile.mkdtemp(prefix="dsum-smollm2-")

    def run(prompt, n):
        inp, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(inp, "w") as f:
            f.write(json.dumps({"input_ids": prompt}) + "\n")
        cmd = [exe, "generate", "--model", gguf, "--input", inp, "--output", out, "--threads", str(threads),
               "--quiet", "--max-new-tokens", str(n), "--min-new-tokens", str(n), *extra]

        def go():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(out) as f:
                return json.loads(f.readline())
        return best(go, rounds)

    run(ids[:1], 1)  # warm-up: page cache
    t_load, _ = run(ids[:1], 1)
    t1, _ = run(ids, 1)
    tn, rec = run(ids, new)
    return {"load": t_load, "t1": t1, "tn": tn, "prefill": t1 - t_load, "decode": (new - 1) / (tn - t1),
            "record": rec}


def bench_torch(hf, ids, new, rounds):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    x = torch.tensor([ids])

    def gen(n):
        with torch.inference_mode():
            return model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)

    gen(2)  # warm-up
    t1, _ = best(lambda: gen(1), rounds)
    tn, out = best(lambda: gen(new), rounds)
    return {"prefill": t1, "t1": t1, "tn": tn, "decode": (new - 1) / (tn - t1),
            "ids": out[0, len(ids):].tolist()}


def bench_ct2(ct2dir, hf, ids, new, rounds, threads):
    import ctranslate2
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(hf)
    toks = tok.convert_ids_to_tokens(ids)
    # The converter records <|im_start|> as the CT2 end token for this folder; use the model's eos
    # (generation_config.json, id 2 = <|im_end|>) so that min_length masks the same token as PyTorch.
    with open(os.path.join(hf, "generation_config.json")) as f:
        eos = json.load(f)["eos_token_id"]
    end = tok.convert_ids_to_tokens(eos if isinstance(eos, list) else [eos])
    gen = ctranslate2.Generator(ct2dir, device="cpu", intra_threads=threads, inter_threads=1,
                                compute_type="float32")

    def g(n):
        r = gen.generate_batch([toks], max_length=n, min_length=n, sampling_topk=1,
                               end_token=end, include_prompt_in_result=False)
        return r[0].sequences_ids[0]

    g(2)
    t1, _ = best(lambda: g(1), rounds)
    tn, out = best(lambda: g(new), rounds)
    return {"prefill": t1, "t1": t1, "tn": tn, "decode": (new - 1) / (tn - t1), "ids": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--dsum", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--json", help="write all results here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    hf = os.path.join(a.cache, "smollm2-hf")
    ct2 = os.path.join(a.cache, "smollm2-ct2-f32")
    ids = prompt_ids(hf, a.prompt)

    r = {}
    dsums = {"dsum": (), "dsum_f32": ("--dequantize",)}
    for k, extra in dsums.items():
        r[k] = bench_dsum(a.dsum, a.gguf, ids, a.new, a.rounds, a.threads, extra)
        print(f"{k}: load {r[k]['load']:.3f}s  prefill {r[k]['prefill']:.3f}s  "
              f"decode {r[k]['decode']:.1f} tok/s", file=sys.stderr)
    r["torch"] = bench_torch(hf, ids, a.new, a.rounds)
    print(f"torch: prefill {r['torch']['prefill']:.3f}s  decode {r['torch']['decode']:.1f} tok/s", file=sys.stderr)
    r["ct2"] = bench_ct2(ct2, hf, ids, a.new, a.rounds, a.threads)
    print(f"ct2: prefill {r['ct2']['prefill']:.3f}s  decode {r['ct2']['decode']:.1f} tok/s", file=sys.stderr)

    for k in dsums:
        r[k]["ids"] = r[k].pop("record")["sequences"][0]  # new tokens only
    d_ids = r["dsum"]["ids"]

    def agree(x, y):
        n = 0
        for p, q in zip(x, y):
            if p != q:
                break
            n += 1
        return n

    r["match_dsum_torch"] = agree(d_ids, r["torch"]["ids"])
    r["match_dsum_f32_torch"] = agree(r["dsum_f32"]["ids"], r["torch"]["ids"])
    r["match_ct2_torch"] = agree(r["ct2"]["ids"], r["torch"]["ids"])
    r["prompt_ids"] = ids

    print("\n| system | prefill, 256 tokens | decode, 128 tokens |\n|---|---|---|")
    names = {"dsum": "dsum (quantized GGUF, fused matmul)", "dsum_f32": "dsum --dequantize (f32)",
             "torch": "transformers (PyTorch) fp32", "ct2": "CTranslate2 float32"}
    for k in ("dsum", "dsum_f32", "torch", "ct2"):
        print(f"| {names[k]} | {r[k]['prefill']:.3f} s | {r[k]['decode']:.1f} tok/s |")
    for d in dsums:
        for k in ("torch", "ct2"):
            print(f"{d} / {k}: prefill time {r[d]['prefill'] / r[k]['prefill']:.2f}x, "
                  f"decode tok/s {r[d]['decode'] / r[k]['decode']:.2f}x")
        print(f"{d} load (process start + GGUF read): {r[d]['load']:.3f} s")
    print(f"greedy ids equal to PyTorch before the first difference: dsum {r['match_dsum_torch']}/{len(d_ids)}, "
          f"dsum --dequantize {r['match_dsum_f32_torch']}/{len(r['dsum_f32']['ids'])}, "
          f"CTranslate2 {r['match_ct2_torch']}/{len(r['ct2']['ids'])} (PyTorch {len(r['torch']['ids'])})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f)


if __name__ == "__main__":
    main()
