#!/usr/bin/env python3
"""The GPU numbers of issue 9 item 5, each beside its peer, as JSON and a markdown table.

  a. NF4 dequantize: dsum's `bench_nf4` example (its stdout kept verbatim; the worst
     dequantize / copy ratio parsed from it, goal 90%) beside bitsandbytes' `dequantize_4bit`
     on the same Llama-3.2-3B weight shapes and a device-to-device copy of the same bytes.
  b. Batch-1 greedy decoding of a random-init Llama-3.2-3B-shaped model in NF4 (blocksize 64,
     double quant): `dsum-cli generate --device cuda` on the folder `dsum-cli nf4 quantize` makes,
     against the bandwidth bound (weight bytes per token / measured copy bandwidth; goal 70%) and
     transformers + bitsandbytes 4-bit (BitsAndBytesConfig nf4, compute dtype bf16).
  c. One QLoRA training step on the same model (LoRA r 16 / alpha 32 / dropout 0.1 on the 7 linear
     layers, AdamW lr 2e-4, grad-norm clip 0.3, same rows): `dsum-cli finetune --device cuda`
     against transformers + peft + bitsandbytes; seconds per step, goal: dsum 2x faster.
  d. KoBART-size BART (random init), batch 1, beam 4, no_repeat_ngram 2, 64 new tokens:
     `dsum-cli generate --device cuda` against transformers on the GPU (float32, and bf16 for
     reference).

Timing. dsum is timed as whole processes: decode tok/s = (N-1) / (T(N new tokens) - T(1 new
token)) and BART s/call = (T(1+calls rows) - T(1 row)) / calls, so process start, model load and
kernel compilation cancel; a training step is the interval between consecutive lines of the
run's metrics.jsonl (polled every 5 ms). The Python peers run in their own processes (one
warm-up, then timed calls with the device synchronized). Every number is the best of --rounds
(training steps: the median of the timed steps).

Every part, and every system inside a part, is run under try/except: a failure becomes an
`error` entry in the JSON and a row of the table, and the rest goes on. The report is rewritten
after each part, so a run killed at its time limit still leaves what it measured.

  bench.py --cache DIR --dsum BIN --bench-nf4 BIN [--device cuda|cpu] [--tiny] [--parts a,b,c,d]
           [--json OUT.json] [--md OUT.md] [--deadline-s S]
"""
import argparse
import csv
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_models  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# (name, rows, cols) of one Llama-3.2-3B decoder layer's linear weights (bench_nf4's shapes).
NF4_SHAPES = [("q_proj", 3072, 3072), ("k_proj", 1024, 3072), ("v_proj", 1024, 3072),
              ("o_proj", 3072, 3072), ("gate_proj", 8192, 3072), ("up_proj", 8192, 3072),
              ("down_proj", 3072, 8192)]
TINY_NF4_SHAPES = [("q_proj", 64, 64), ("gate_proj", 128, 64), ("down_proj", 64, 128)]
QUANT_CONFIG = {  # what transformers writes into config.json for a bitsandbytes 4-bit model
    "_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True, "llm_int8_enable_fp32_cpu_offload": False,
    "llm_int8_has_fp16_weight": False, "llm_int8_skip_modules": None, "llm_int8_threshold": 6.0,
    "load_in_4bit": True, "load_in_8bit": False, "quant_method": "bitsandbytes"}


def sizes(tiny):
    """Workload sizes; --tiny only checks the harness (CPU, seconds)."""
    if tiny:
        return dict(prompt=16, new=16, train_batch=2, grad_accum=1, src_len=32, tgt_len=8,
                    train_steps=2, bart_src=32, bart_new=8, bart_calls=2, shapes=TINY_NF4_SHAPES,
                    copy_bytes=64 << 20, nf4_iters=5)
    return dict(prompt=128, new=128, train_batch=4, grad_accum=1, src_len=512, tgt_len=100,
                train_steps=5, bart_src=256, bart_new=64, bart_calls=3, shapes=NF4_SHAPES,
                copy_bytes=1 << 30, nf4_iters=100)


# ------------------------------------------------------------------------------ helpers
class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()

    def timeout(self, want):
        """A subprocess limit: `want`, cut to what is left (minus a margin for the report)."""
        t = min(want, self.left() - 20)
        if t < 5:
            raise TimeoutError("no time left before --deadline-s")
        return t


def tail(s, n=3000):
    s = s or ""
    return s if len(s) <= n else "..." + s[-n:]


def run(cmd, timeout, env=None):
    """Run `cmd`; (wall seconds, stdout). A failure raises with the command and its stderr."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}\n"
                           f"{tail(e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr)}")
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"exit {p.returncode}: {last}\ncommand: {' '.join(cmd)}\n{tail(p.stderr)}\n{tail(p.stdout, 1000)}")
    return wall, p.stdout


def worker(name, args, timeout):
    """Run one peer measurement in its own process (frees the GPU memory, survives a crash).
    Its last stdout line is its JSON result, or {"error": ...} when it raised."""
    # The arguments go through stdin: token rows overflow the command line (E2BIG).
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "-"]
    try:
        p = subprocess.run(cmd, input=json.dumps(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"worker {name} timed out after {timeout:.0f} s")
    lines = p.stdout.strip().splitlines()
    try:
        res = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"worker {name} exit {p.returncode}, no result\n{tail(p.stderr)}")
    if "error" in res:
        raise RuntimeError(f"worker {name}: {res['error']}\n{res.get('traceback', '')}")
    return res


def guarded(fn, *a, **k):
    try:
        return fn(*a, **k)
    except Exception as e:  # recorded, never fatal: the other systems and parts still run
        return {"error": f"{type(e).__name__}: {e}", "traceback": tail(traceback.format_exc(), 2000)}


def dsum_flags(exe, verb):
    """The flags `dsum-cli VERB --help` lists (to pass --device only to a build that has it)."""
    p = subprocess.run([exe, verb, "--help"], capture_output=True, text=True, timeout=60)
    return set(re.findall(r"--[a-z0-9-]+", p.stdout + p.stderr))


def device_args(exe, verb, device):
    if "--device" in dsum_flags(exe, verb):
        return ["--device", device]
    if device == "cpu":
        return []  # a build from before --device runs on the CPU
    raise RuntimeError(f"`dsum-cli {verb}` has no --device flag: this build has no CUDA backend")


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(torch, device, nbytes, iters=20):
    """Device-to-device copy, GB/s counting bytes read and written (bench_nf4's convention)."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(torch, device)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            dst.copy_(src)
        sync(torch, device)
        best = min(best, (time.perf_counter() - t0) / iters)
    return 2 * src.numel() / best / 1e9


def agree(x, y):
    n = 0
    for p, q in zip(x, y):
        if p != q:
            break
        n += 1
    return n


# ------------------------------------------------------------------------------ workers (own process)
def w_copy(a):
    import torch
    return {"copy_gbps": copy_bandwidth(torch, a["device"], a["bytes"])}


def w_bnb_dequant(a):
    """bitsandbytes dequantize_4bit (nf4, blocksize 64) to bf16 on each shape, beside a copy
    moving the same bytes; buffers rotated over >= 256 MiB so L2 does not serve repeats."""
    import torch
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    dev, iters = a["device"], a["iters"]
    rotate = 256 << 20 if dev.startswith("cuda") else 0
    rows = []
    for name, r, c in a["shapes"]:
        for double in (False, True):
            w = (torch.randn(r, c, device=dev) * 0.02).to(torch.bfloat16)
            q, st = F.quantize_4bit(w, blocksize=64, compress_statistics=double, quant_type="nf4")
            wbytes = q.numel() * q.element_size() + st.absmax.numel() * st.absmax.element_size()
            if double:
                wbytes += st.state2.absmax.numel() * 4 + 256 * 4
            traffic = wbytes + w.numel() * 2
            copies = max(2, -(-rotate // traffic))
            qs = [(q.clone(), st) for _ in range(copies)]
            outs = [torch.empty_like(w) for _ in range(copies)]
            i = 0

            def call():
                nonlocal i
                i = (i + 1) % copies
                # bitsandbytes' CPU backend has no `out=` variant (the tiny check runs there).
                kw = {"out": outs[i]} if dev.startswith("cuda") else {}
                F.dequantize_4bit(qs[i][0], qs[i][1], quant_type="nf4", **kw)
            call(), call()
            sync(torch, dev)
            t0 = time.perf_counter()
            for _ in range(iters):
                call()
            sync(torch, dev)
            t = (time.perf_counter() - t0) / iters
            deq = traffic / t / 1e9
            cp = copy_bandwidth(torch, dev, max(traffic, 2), iters=max(iters // 5, 2))
            rows.append({"weight": name, "absmax": "double" if double else "f32",
                         "dequant_bf16_gbps": deq, "copy_gbps": cp, "ratio": deq / cp})
            qs.clear(), outs.clear()  # free before the next shape
    return {"rows": rows, "bitsandbytes": bnb.__version__, "torch": torch.__version__}


def load_bnb(torch, folder, device, **kw):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=q, dtype=torch.bfloat16,
                                                device_map={"": device}, **kw)


def w_bnb_decode(a):
    import torch
    import bitsandbytes as bnb
    import transformers
    dev = a["device"]
    t0 = time.perf_counter()
    model = load_bnb(torch, a["folder"], dev).eval()
    load_s = time.perf_counter() - t0
    x = torch.tensor([a["ids"]], device=dev)
    mask = torch.ones_like(x)

    def gen(n):
        with torch.inference_mode():
            out = model.generate(x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 num_beams=1, pad_token_id=a["pad"])
        sync(torch, dev)
        return out

    gen(2)
    t1 = tn = float("inf")
    for _ in range(a["rounds"]):
        s = time.perf_counter()
        gen(1)
        t1 = min(t1, time.perf_counter() - s)
        s = time.perf_counter()
        out = gen(a["new"])
        tn = min(tn, time.perf_counter() - s)
    mem = torch.cuda.max_memory_allocated() if dev.startswith("cuda") else 0
    return {"load_s": load_s, "t1": t1, "tn": tn, "decode_tok_s": (a["new"] - 1) / (tn - t1),
            "ids": out[0, len(a["ids"]):].tolist(), "max_memory_bytes": mem,
            "bitsandbytes": bnb.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def w_bnb_train(a):
    import torch
    import bitsandbytes as bnb
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    dev = a["device"]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = load_bnb(torch, a["folder"], dev)
    model.config.use_cache = False
    if a["grad_ckpt"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=LORA_TARGETS,
                                             task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    load_s = time.perf_counter() - t0
    rows, labels = a["rows"], a["labels"]
    b = a["batch"]
    micro = [(torch.tensor(rows[i:i + b], device=dev), torch.tensor(labels[i:i + b], device=dev))
             for i in range(0, len(rows), b)]
    step_s, losses = [], []
    k = 0
    for _ in range(a["steps"] + 1):  # one warm-up step
        sync(torch, dev)
        s = time.perf_counter()
        total = 0.0
        for _ in range(a["grad_accum"]):
            x, y = micro[k % len(micro)]
            k += 1
            loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss / a["grad_accum"]
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(torch, dev)
        step_s.append(time.perf_counter() - s)
        losses.append(total)
    mem = torch.cuda.max_memory_allocated() if dev.startswith("cuda") else 0
    return {"load_s": load_s, "step_s": step_s, "loss": losses, "trainable_params": sum(p.numel() for p in params),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "max_memory_bytes": mem, "bitsandbytes": bnb.__version__, "peft": peft.__version__,
            "transformers": transformers.__version__, "torch": torch.__version__}


def w_torch_bart(a):
    import torch
    import transformers
    from transformers import BartForConditionalGeneration
    dev = a["device"]
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[a["dtype"]]
    model = BartForConditionalGeneration.from_pretrained(a["folder"], dtype=dtype).to(dev).eval()

    def call(row):
        ids = torch.tensor([row], device=dev)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=4,
                                 no_repeat_ngram_size=2, max_new_tokens=a["new"], min_new_tokens=a["new"],
                                 do_sample=False, early_stopping=False, length_penalty=1.0)
        sync(torch, dev)
        return out[0].tolist()

    call(a["inputs"][0])
    best, seqs = float("inf"), []
    for _ in range(a["rounds"]):
        times, seqs = [], []
        for row in a["inputs"][1:1 + a["calls"]]:
            s = time.perf_counter()
            seqs.append(call(row))
            times.append(time.perf_counter() - s)
        best = min(best, statistics.mean(times))
    return {"s_per_call": best, "seqs": seqs, "transformers": transformers.__version__, "torch": torch.__version__}


WORKERS = {"copy": w_copy, "bnb_dequant": w_bnb_dequant, "bnb_decode": w_bnb_decode,
           "bnb_train": w_bnb_train, "torch_bart": w_torch_bart}


# ------------------------------------------------------------------------------ parts
def part_a(o, dl):
    r = {}

    def dsum():
        if not o.bench_nf4 or not os.path.exists(o.bench_nf4):
            raise RuntimeError(f"no bench_nf4 binary at {o.bench_nf4!r} (build it: tools/bench/cuda/build_bins.sh)")
        _, out = run([o.bench_nf4, "--iters", str(o.sz["nf4_iters"])], dl.timeout(300))
        m = re.search(r"worst dequantize / copy ratio:\s*([0-9.]+)%", out)
        return {"stdout": out, "worst_ratio": float(m.group(1)) / 100 if m else None}

    r["dsum"] = guarded(dsum)
    r["bitsandbytes"] = guarded(worker, "bnb_dequant", {"device": o.device, "shapes": o.sz["shapes"],
                                                        "iters": o.sz["nf4_iters"]}, dl.timeout(300))
    return r


def make_model(o, dl, which):
    """make_models.py in its own process: this one never holds GPU memory while dsum runs."""
    cmd = [sys.executable, os.path.join(HERE, "make_models.py"), "--out", o.cache, "--only", which,
           "--device", o.device] + (["--tiny"] if o.tiny else [])
    return run(cmd, dl.timeout(300))[0]


def nf4_folder(o, dl, src):
    """`dsum-cli nf4 quantize` of the bf16 folder (blocksize 64, double quant; embeddings and
    norms copied), with the config's quantization_config as transformers writes it."""
    dst = os.path.join(o.cache, "llama-nf4")
    if os.path.exists(os.path.join(dst, "model.safetensors")):
        return dst, None
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    wall, _ = run([o.dsum, "nf4", "quantize", "--input", os.path.join(src, "model.safetensors"),
                   "--output", os.path.join(tmp, "model.safetensors"), "--blocksize", "64", "--double-quant",
                   "--exclude", "embed_tokens", "--exclude", "lm_head", "--exclude", "norm"], dl.timeout(400))
    for f in os.listdir(src):
        if f != "model.safetensors":
            shutil.copy(os.path.join(src, f), tmp)
    with open(os.path.join(tmp, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = QUANT_CONFIG
    make_models.write_json(os.path.join(tmp, "config.json"), cfg)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst, wall


def bytes_per_token(folder):
    """Weight bytes one decoding step must read: every tensor of the file except the input
    embedding, of which one row is read, unless it is also the (tied) output matrix."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    head = safetensors_header(os.path.join(folder, "model.safetensors"))
    tied = cfg.get("tie_word_embeddings", False) and "lm_head.weight" not in head
    total = 0
    for name, t in head.items():
        if name == "__metadata__":
            continue
        n = t["data_offsets"][1] - t["data_offsets"][0]
        if name.endswith("embed_tokens.weight") and not tied:
            n //= t["shape"][0]
        total += n
    return total


def prompt_ids(vocab_words, n, seed):
    rng = random.Random(seed)
    return [rng.randrange(make_models.FIRST_FREE_WORD, vocab_words) for _ in range(n)]


def dsum_decode(o, dl, folder, ids, new, dev_args):
    """dsum tok/s from two whole-process runs: 1 and `new` new tokens on the same prompt."""
    tmp = os.path.join(o.cache, "work")
    os.makedirs(tmp, exist_ok=True)
    inp, out = os.path.join(tmp, "decode-in.jsonl"), os.path.join(tmp, "decode-out.jsonl")
    with open(inp, "w") as f:
        f.write(json.dumps({"input_ids": ids}) + "\n")

    def go(n):
        cmd = [o.dsum, "generate", "--model", folder, "--input", inp, "--output", out, "--quiet",
               "--max-new-tokens", str(n), "--min-new-tokens", str(n), "--num-beams", "1", *dev_args]
        wall, _ = run(cmd, dl.timeout(180))
        with open(out) as f:
            return wall, json.loads(f.readline())

    t1 = tn = float("inf")
    for r in range(o.rounds):
        if r and t1 + tn > 90:
            break  # a slow build: one round, leave the time to the other systems
        w, _ = go(1)
        t1 = min(t1, w)
        w, rec = go(new)
        tn = min(tn, w)
    if tn <= t1:
        raise RuntimeError(f"T({new} tokens) {tn:.3f} s <= T(1 token) {t1:.3f} s: noise exceeds the work")
    seq = rec["sequences"][0]
    if len(seq) > new and seq[:len(ids)] == ids:
        seq = seq[len(ids):]  # causal `sequences` may repeat the prompt
    return {"t1": t1, "tn": tn, "decode_tok_s": (new - 1) / (tn - t1), "ids": seq}


def part_b(o, dl):
    r = {}
    src = os.path.join(o.cache, "llama")
    r["make_model_s"] = make_model(o, dl, "llama")
    cfg = make_models.llama_config(o.tiny)
    words = cfg["vocab_size"] - make_models.N_SPECIAL_LLAMA
    ids = prompt_ids(words, o.sz["prompt"], 1)
    new = o.sz["new"]
    r["workload"] = {"prompt_tokens": len(ids), "new_tokens": new, "batch": 1, "search": "greedy"}
    r["copy"] = guarded(worker, "copy", {"device": o.device, "bytes": o.sz["copy_bytes"]}, dl.timeout(120))

    nf4 = guarded(nf4_folder, o, dl, src)
    if isinstance(nf4, dict):
        r["nf4_quantize"] = nf4
        r["dsum"] = {"error": "no NF4 folder: " + nf4["error"]}
    else:
        folder, wall = nf4
        r["nf4_quantize"] = {"folder": folder, "seconds": wall}
        r["weight_bytes_per_token"] = bytes_per_token(folder)
        r["dsum"] = guarded(lambda: dsum_decode(o, dl, folder, ids, new, device_args(o.dsum, "generate", o.device)))
    if o.dsum_dense:
        r["dsum_bf16"] = guarded(lambda: dsum_decode(o, dl, src, ids, new, device_args(o.dsum, "generate", o.device)))
    bw = r["copy"].get("copy_gbps")
    if bw and r.get("weight_bytes_per_token"):
        r["bound_tok_s"] = bw * 1e9 / r["weight_bytes_per_token"]
        if "decode_tok_s" in r["dsum"]:
            r["dsum"]["fraction_of_bound"] = r["dsum"]["decode_tok_s"] / r["bound_tok_s"]
    r["bitsandbytes"] = guarded(worker, "bnb_decode", {
        "device": o.device, "folder": src, "ids": ids, "new": new, "rounds": o.rounds,
        "pad": words + 4}, dl.timeout(400))
    if "ids" in r["dsum"] and "ids" in r["bitsandbytes"]:
        r["greedy_ids_agree"] = agree(r["dsum"]["ids"], r["bitsandbytes"]["ids"])
    return r


def train_rows(o, words):
    """Rows whose dialogue and summary are longer than max_source_len / max_target_len words, so
    every example is cut to the same length and both systems see identical shapes."""
    rng = random.Random(7)
    n = o.sz["train_batch"] * o.sz["grad_accum"] * (o.sz["train_steps"] + 2)
    rows = []
    for i in range(n):
        d = " ".join(f"w{rng.randrange(make_models.FIRST_FREE_WORD, words)}" for _ in range(o.sz["src_len"] + 16))
        s = " ".join(f"w{rng.randrange(make_models.FIRST_FREE_WORD, words)}" for _ in range(o.sz["tgt_len"] + 8))
        rows.append({"fname": f"bench_{i}", "dialogue": d, "summary": s})
    return rows


def peer_examples(folder, rows, sz):
    """The token rows dsum builds for a causal LM (dsum-core train::data::causal_example): the chat
    prompt of the cut dialogue, then the cut summary and <|eot_id|>; labels -100 on the prompt."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    ids, labels = [], []
    for r in rows:
        d = " ".join(r["dialogue"].split()[:sz["src_len"]])
        prompt = tok.apply_chat_template([{"role": "user", "content": d}], add_generation_prompt=True, tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(r["summary"], add_special_tokens=False)["input_ids"][:sz["tgt_len"]] + [eot]
        ids.append(p + t)
        labels.append([-100] * len(p) + t)
    if len({len(x) for x in ids}) != 1:
        raise RuntimeError(f"rows of unequal length {sorted({len(x) for x in ids})}")
    return ids, labels


def dsum_finetune(o, dl, folder, train_csv, dev_args):
    run_dir = os.path.join(o.cache, "work", "finetune-run")
    shutil.rmtree(run_dir, ignore_errors=True)
    sz = o.sz
    steps = sz["train_steps"] + 1
    cfg_path = os.path.join(o.cache, "work", "qlora-bench.toml")
    targets = ", ".join(f'"{t}"' for t in LORA_TARGETS)
    # configs/qlora-llama.toml's method and optimizer; no dev set, no evaluation, no saving
    # before the end: nothing but training steps between two metrics lines.
    with open(cfg_path, "w") as f:
        f.write(f"""[model]
path = "{folder}"

[data]
train = "{train_csv}"
max_source_len = {sz['src_len']}
max_target_len = {sz['tgt_len']}
close_token = "<|eot_id|>"

[prompt]
system = ""
user = "{{dialogue}}"

[method]
kind = "qlora"
r = 16
alpha = 32
dropout = 0.1
targets = [{targets}]
nf4_blocksize = 64
double_quant = true

[optim]
lr = 2e-4
betas = [0.9, 0.999]
weight_decay = 0.0
scheduler = "constant"
warmup_ratio = 0.0
max_grad_norm = 0.3

[train]
batch_size = {sz['train_batch']}
grad_accum = {sz['grad_accum']}
epochs = 1
max_steps = {steps}
shuffle = false
seed = 42
early_stopping_patience = 0
keep_checkpoints = 1

[eval]
rouge = false

[output]
dir = "{run_dir}"
nickname = "bench"
""")
    cmd = [o.dsum, "finetune", "--config", cfg_path, "--quiet", *dev_args]
    wall0 = time.time()
    process_s, _ = run(cmd, dl.timeout(240))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        recs = [json.loads(x) for x in f.read().splitlines() if x.strip()]
    recs = [r for r in recs if "loss" in r and "eval_loss" not in r]
    walls = step_walls(os.path.join(run_dir, "tb"))
    steps_logged = sorted(walls)
    if len(steps_logged) < 2:
        raise RuntimeError(f"{len(steps_logged)} train/loss events under {run_dir}/tb; need 2 or more")
    times = [walls[b] - walls[a] for a, b in zip(steps_logged, steps_logged[1:])]
    return {"first_step_at_s": walls[steps_logged[0]] - wall0, "step_s": times,
            "median_step_s": statistics.median(times), "best_step_s": min(times),
            "loss": [r["loss"] for r in recs], "label_tokens_per_step": recs[-1].get("tokens") if recs else None,
            "process_s": process_s}


def step_walls(tb_dir):
    """{step: wall_time} of the `train/loss` events in the TensorBoard files dsum writes
    (dsum-core train::tensorboard): TFRecord framing around Event{1: wall_time (double),
    2: step (varint), 5: summary}. The trainer logs a step right after its optimizer update,
    so consecutive wall times are whole steps, free of load and save time."""
    walls = {}
    for name in sorted(os.listdir(tb_dir)):
        with open(os.path.join(tb_dir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            n = struct.unpack_from("<Q", data, pos)[0]
            ev = data[pos + 12:pos + 12 + n]
            pos += 12 + n + 4
            if not ev or ev[0] != 0x09 or b"train/loss" not in ev:
                continue
            wall = struct.unpack_from("<d", ev, 1)[0]
            step, shift, i = 0, 0, 9
            if i < len(ev) and ev[i] == 0x10:
                i += 1
                while True:
                    b = ev[i]
                    step |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if b < 0x80:
                        break
            walls[step] = wall
    return walls


def part_c(o, dl):
    r = {}
    src = os.path.join(o.cache, "llama")
    r["make_model_s"] = make_model(o, dl, "llama")
    cfg = make_models.llama_config(o.tiny)
    words = cfg["vocab_size"] - make_models.N_SPECIAL_LLAMA
    rows = train_rows(o, words)
    os.makedirs(os.path.join(o.cache, "work"), exist_ok=True)
    train_csv = os.path.join(o.cache, "work", "train.csv")
    with open(train_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["fname", "dialogue", "summary"])
        w.writeheader()
        w.writerows(rows)
    sz = o.sz
    ids, labels = peer_examples(src, rows, sz)
    r["workload"] = {"batch": sz["train_batch"], "grad_accum": sz["grad_accum"], "seq_len": len(ids[0]),
                     "label_tokens_per_step": sz["train_batch"] * sz["grad_accum"] * (sz["tgt_len"] + 1),
                     "timed_steps": sz["train_steps"], "lora": "r 16, alpha 32, dropout 0.1, 7 linear layers",
                     "optimizer": "AdamW lr 2e-4, clip 0.3", "base": "NF4 blocksize 64, double quant"}
    r["dsum"] = guarded(lambda: dsum_finetune(o, dl, src, train_csv, device_args(o.dsum, "finetune", o.device)))
    # Every row, in dsum's order (no shuffle): step k of both systems trains on the same rows.
    peer = guarded(worker, "bnb_train", {
        "device": o.device, "folder": src, "rows": ids, "labels": labels, "batch": sz["train_batch"],
        "grad_accum": sz["grad_accum"], "steps": sz["train_steps"], "grad_ckpt": o.grad_ckpt}, dl.timeout(480))
    if "step_s" in peer:
        timed = peer["step_s"][1:]
        peer.update(median_step_s=statistics.median(timed), best_step_s=min(timed))
    r["peft_bitsandbytes"] = peer
    if "median_step_s" in r["dsum"] and "median_step_s" in peer:
        r["speedup"] = peer["median_step_s"] / r["dsum"]["median_step_s"]
    if r["dsum"].get("loss") and peer.get("loss"):
        # Same rows, LoRA B = 0 at the start: the first losses must agree (a check that both
        # systems train on the same tokens), whatever the adapters' random A.
        x, y = r["dsum"]["loss"][0], peer["loss"][0]
        r["first_loss_rel_diff"] = abs(x - y) / abs(y)
        # Later steps differ by the adapters' random A and by dropout masks too.
        r["loss_max_rel_diff"] = max(abs(a - b) / abs(b) for a, b in zip(r["dsum"]["loss"], peer["loss"]))
    return r


def dsum_bart(o, dl, folder, inputs, dev_args):
    tmp = os.path.join(o.cache, "work")
    os.makedirs(tmp, exist_ok=True)
    calls, new = o.sz["bart_calls"], o.sz["bart_new"]
    flags = ["--quiet", "--batch-size", "1", "--num-beams", "4", "--no-repeat-ngram-size", "2",
             "--min-new-tokens", str(new), "--max-new-tokens", str(new), "--length-penalty", "1.0",
             "--early-stopping", "false", *dev_args]
    best = {}
    for r in range(o.rounds):
        if r and sum(best.values()) > 90:
            break  # a slow build: one round, leave the time to the other systems
        for tag, n in (("A", 1), ("B", 1 + calls)):
            inp, out = os.path.join(tmp, f"bart-{tag}.jsonl"), os.path.join(tmp, f"bart-{tag}.out.jsonl")
            with open(inp, "w") as f:
                for row in inputs[:n]:
                    f.write(json.dumps({"input_ids": row}) + "\n")
            wall, _ = run([o.dsum, "generate", "--model", folder, "--input", inp, "--output", out, *flags],
                          dl.timeout(180))
            best[tag] = min(best.get(tag, float("inf")), wall)
    if best["B"] <= best["A"]:
        raise RuntimeError(f"T(1+{calls} rows) {best['B']:.3f} s <= T(1 row) {best['A']:.3f} s: noise exceeds the work")
    with open(os.path.join(tmp, "bart-B.out.jsonl")) as f:
        seqs = [json.loads(x)["sequences"][0] for x in f][1:]
    return {"t_A": best["A"], "t_B": best["B"], "s_per_call": (best["B"] - best["A"]) / calls, "seqs": seqs}


def part_d(o, dl):
    r = {}
    folder = os.path.join(o.cache, "bart")
    r["make_model_s"] = make_model(o, dl, "bart")
    vocab = make_models.bart_config(o.tiny)["vocab_size"]
    rng = random.Random(1234)
    n_special = len(make_models.BART_SPECIALS)
    inputs = [[rng.randrange(n_special, vocab) for _ in range(o.sz["bart_src"])] for _ in range(1 + o.sz["bart_calls"])]
    r["workload"] = {"batch": 1, "num_beams": 4, "no_repeat_ngram_size": 2, "source_tokens": o.sz["bart_src"],
                     "new_tokens": o.sz["bart_new"], "calls": o.sz["bart_calls"]}
    r["dsum"] = guarded(lambda: dsum_bart(o, dl, folder, inputs, device_args(o.dsum, "generate", o.device)))
    for dtype in ("float32", "bfloat16"):
        r[f"torch_{dtype}"] = guarded(worker, "torch_bart", {
            "device": o.device, "folder": folder, "dtype": dtype, "inputs": inputs, "new": o.sz["bart_new"],
            "calls": o.sz["bart_calls"], "rounds": o.rounds}, dl.timeout(300))
    d, t = r["dsum"], r["torch_float32"]
    if "s_per_call" in d and "s_per_call" in t:
        r["speedup_vs_float32"] = t["s_per_call"] / d["s_per_call"]
        r["beams_agree_calls"] = sum(a == b for a, b in zip(d["seqs"], t["seqs"]))
    return r


PARTS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}
TITLES = {"a": "NF4 dequantize vs copy bandwidth", "b": "NF4 Llama-3.2-3B shape, batch-1 greedy decode",
          "c": "QLoRA training step, Llama-3.2-3B shape", "d": "KoBART shape, beam 4 generation"}


# ------------------------------------------------------------------------------ report
def env_info(o):
    info = {"device_arg": o.device, "tiny": o.tiny, "dsum": o.dsum, "bench_nf4": o.bench_nf4,
            "dsum_commit": os.environ.get("DSUM_COMMIT"), "build_notes": os.environ.get("DSUM_BUILD_NOTES")}
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        info["nvidia_smi"] = f"unavailable: {e}"
    for mod in ("torch", "transformers", "peft", "bitsandbytes"):
        p = subprocess.run([sys.executable, "-c", f"import {mod}; print({mod}.__version__)"],
                           capture_output=True, text=True, timeout=120)
        last = (p.stdout if p.returncode == 0 else p.stderr).strip().splitlines()[-1:] or [""]
        info[mod] = last[0] if p.returncode == 0 else "not importable: " + last[0][:200]
    return info


def f(x, fmt="{:.1f}"):
    return "—" if x is None else fmt.format(x)


def err(d):
    e = d.get("error") if isinstance(d, dict) else None
    return None if e is None else "ERROR: " + e.splitlines()[0][:200].replace("|", "/")


def table(res):
    """One row per number the issue asks for: | part | measure | dsum | peer | dsum vs peer / goal |."""
    rows = []
    P = res["parts"]
    if "a" in P:
        a = P["a"]
        if "error" in a:
            rows.append(("a", "NF4 dequantize / copy", err(a), "", "goal ≥ 90%"))
        else:
            d, b = a.get("dsum", {}), a.get("bitsandbytes", {})
            first = (d.get("stdout") or "").strip().splitlines()[:1] or ["no output"]
            dv = err(d) or (f(100 * d["worst_ratio"], "{:.0f}% of copy (worst shape)") if d.get("worst_ratio") is not None
                            else "no ratio line; bench_nf4 said: " + first[0][:150].replace("|", "/"))
            bv = err(b) or "{:.0f}% of copy (worst shape), {:.0f}–{:.0f} GB/s".format(
                100 * min(x["ratio"] for x in b["rows"]), min(x["dequant_bf16_gbps"] for x in b["rows"]),
                max(x["dequant_bf16_gbps"] for x in b["rows"]))
            rows.append(("a", "NF4 dequantize GB/s / copy GB/s (bitsandbytes: bf16 out)", dv, bv, "goal ≥ 90%"))
    if "b" in P:
        b = P["b"]
        if "error" in b:
            rows.append(("b", "decode tok/s", err(b), "", "goal ≥ 70% of bound"))
        else:
            d, q = b.get("dsum", {}), b.get("bitsandbytes", {})
            bound = b.get("bound_tok_s")
            dv = err(d) or f(d["decode_tok_s"], "{:.1f} tok/s")
            qv = err(q) or f(q["decode_tok_s"], "{:.1f} tok/s")
            frac = d.get("fraction_of_bound")
            vs = (f"{100 * frac:.0f}% of bound ({bound:.1f} tok/s)" if frac is not None
                  else f"bound {f(bound)} tok/s")
            if "decode_tok_s" in d and "decode_tok_s" in q:
                vs += f"; {d['decode_tok_s'] / q['decode_tok_s']:.2f}x bnb"
            rows.append(("b", "batch-1 decode (transformers + bnb nf4, bf16 compute)", dv, qv, vs + "; goal ≥ 70%"))
            if "dsum_bf16" in b:
                e = b["dsum_bf16"]
                rows.append(("b", "dsum on the bf16 folder (reference)", err(e) or f(e["decode_tok_s"], "{:.1f} tok/s"), "", ""))
    if "c" in P:
        c = P["c"]
        if "error" in c:
            rows.append(("c", "QLoRA s/step", err(c), "", "goal 2x"))
        else:
            d, q = c.get("dsum", {}), c.get("peft_bitsandbytes", {})
            dv = err(d) or f(d["median_step_s"], "{:.3f} s/step")
            qv = err(q) or f(q["median_step_s"], "{:.3f} s/step")
            sp = c.get("speedup")
            w = c["workload"]
            rel = c.get("first_loss_rel_diff")
            rows.append(("c", f"QLoRA step, {w['batch']}x{w['seq_len']} tokens (peft + bnb)", dv, qv,
                         (f"{sp:.2f}x" if sp else "—") + "; goal ≥ 2x"
                         + (f"; first loss rel. diff {rel:.1e}" if rel is not None else "")
                         + (f", worst {c['loss_max_rel_diff']:.1e}" if "loss_max_rel_diff" in c else "")))
    if "d" in P:
        dd = P["d"]
        if "error" in dd:
            rows.append(("d", "BART beam-4 s/call", err(dd), "", ""))
        else:
            d, t32, t16 = dd.get("dsum", {}), dd.get("torch_float32", {}), dd.get("torch_bfloat16", {})
            sp = dd.get("speedup_vs_float32")
            rows.append(("d", f"KoBART, batch 1, beam 4, {dd['workload']['new_tokens']} new tokens (transformers fp32)", err(d) or f(d["s_per_call"], "{:.3f} s/call"),
                         err(t32) or f(t32["s_per_call"], "{:.3f} s/call"), f"{sp:.2f}x" if sp else "—"))
            rows.append(("d", "same, transformers bf16 (reference)", "", err(t16) or f(t16["s_per_call"], "{:.3f} s/call"), ""))
    for k, v in res.get("skipped", {}).items():
        rows.append((k, TITLES[k], "skipped: " + v, "", ""))
    return rows


def markdown(res):
    e = res["env"]
    out = [f"# dsum GPU benchmark (issue 9 item 5){' — TINY harness check' if e['tiny'] else ''}", "",
           f"GPU: {e.get('nvidia_smi')}; torch {e.get('torch')}, transformers {e.get('transformers')}, "
           f"peft {e.get('peft')}, bitsandbytes {e.get('bitsandbytes')}; checkout {e.get('dsum_commit')}", "",
           f"dsum binaries: {e.get('build_notes')}", ""]
    out += ["| part | measure | dsum | peer | dsum vs peer / goal |", "|---|---|---|---|---|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in table(res)]
    P = res["parts"]
    if "b" in P and "error" not in P["b"]:
        b = P["b"]
        out += ["", f"b: copy bandwidth {f(b['copy'].get('copy_gbps'), '{:.0f}')} GB/s (read + write), weight bytes "
                f"per token {f(b.get('weight_bytes_per_token'), '{:,}')} (NF4 file, tied embedding as the output "
                f"matrix), workload {b['workload']}, greedy ids equal before the first difference: "
                f"{b.get('greedy_ids_agree')}"]
    if "c" in P and "error" not in P["c"]:
        c = P["c"]
        out += ["", f"c: workload {c['workload']}; dsum label tokens per step "
                f"{c['dsum'].get('label_tokens_per_step')}; peft trainable params "
                f"{c['peft_bitsandbytes'].get('trainable_params')}, attention "
                f"{c['peft_bitsandbytes'].get('attn_implementation')}"]
    a = P.get("a", {})
    if isinstance(a.get("bitsandbytes"), dict) and "rows" in a["bitsandbytes"]:
        out += ["", "a: bitsandbytes dequantize_4bit (nf4, blocksize 64, bf16 out)", "",
                "| weight | absmax | dequant GB/s | copy GB/s | ratio |", "|---|---|---|---|---|"]
        out += [f"| {x['weight']} | {x['absmax']} | {x['dequant_bf16_gbps']:.0f} | {x['copy_gbps']:.0f} | "
                f"{100 * x['ratio']:.0f}% |" for x in a["bitsandbytes"]["rows"]]
    if isinstance(a.get("dsum"), dict) and a["dsum"].get("stdout"):
        out += ["", "a: `bench_nf4` output, verbatim:", "", "```", a["dsum"]["stdout"].rstrip(), "```"]
    errors = [(k, name, v) for k, p in P.items() for name, v in (p.items() if isinstance(p, dict) else [])
              if isinstance(v, dict) and "error" in v]
    errors += [(k, "part", p) for k, p in P.items() if isinstance(p, dict) and "error" in p]
    if errors:
        out += ["", "## Errors", ""]
        for k, name, v in errors:
            out += [f"{k} / {name}:", "", "```", (v.get("traceback") or v["error"]).rstrip(), "```", ""]
    return "\n".join(out) + "\n"


def write(res, o):
    s = json.dumps(res, indent=1, default=str)
    md = markdown(res)
    if o.json:
        with open(o.json + ".tmp", "w") as fh:
            fh.write(s)
        os.replace(o.json + ".tmp", o.json)
    if o.md:
        with open(o.md + ".tmp", "w") as fh:
            fh.write(md)
        os.replace(o.md + ".tmp", o.md)
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--cache", help="models and work files, never in the repo "
                    "(default /tmp/dsum-cuda-bench, or /tmp/dsum-cuda-bench-tiny with --tiny)")
    ap.add_argument("--dsum", default="target/release/dsum-cli")
    ap.add_argument("--bench-nf4", default="target/release/examples/bench_nf4")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes: checks the harness, measures nothing")
    ap.add_argument("--parts", default="a,b,c,d")
    ap.add_argument("--rounds", type=int, default=None, help="best-of rounds (default 2, tiny 1)")
    ap.add_argument("--grad-ckpt", action="store_true", help="peer training with gradient checkpointing")
    ap.add_argument("--dsum-dense", action="store_true", help="b: also decode the bf16 folder with dsum")
    ap.add_argument("--deadline-s", type=float, default=1e9, help="skip what would start after this")
    ap.add_argument("--json")
    ap.add_argument("--md")
    o = ap.parse_args()
    if o.worker:
        try:
            args = o.worker[1]
            res = WORKERS[o.worker[0]](json.loads(sys.stdin.read() if args == "-" else args))
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {str(e)[:1500]}", "traceback": tail(traceback.format_exc(), 1500)}
        print(json.dumps(res))
        sys.exit(1 if "error" in res else 0)
    o.sz = sizes(o.tiny)
    o.cache = o.cache or ("/tmp/dsum-cuda-bench-tiny" if o.tiny else "/tmp/dsum-cuda-bench")
    o.rounds = o.rounds or (1 if o.tiny else 2)
    o.dsum = os.path.abspath(o.dsum)
    o.bench_nf4 = os.path.abspath(o.bench_nf4) if o.bench_nf4 else None
    os.makedirs(o.cache, exist_ok=True)
    dl = Deadline(o.deadline_s)
    res = {"env": env_info(o), "parts": {}, "skipped": {}}
    for k in o.parts.split(","):
        if dl.left() < 60:
            res["skipped"][k] = f"less than 60 s left of --deadline-s {o.deadline_s:.0f}"
            continue
        print(f"== part {k}: {TITLES[k]}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        res["parts"][k] = guarded(PARTS[k], o, dl)
        res["parts"][k]["part_s"] = time.perf_counter() - t
        write(res, o)
        print(f"== part {k} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    print(write(res, o))


if __name__ == "__main__":
    main()
