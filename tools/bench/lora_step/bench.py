"""LoRA training step on CPU (issue 5 item 8): dsum vs PyTorch + peft, same model, same batch.

SmolLM2-135M (the float32 transformers folder tools/bench/smollm2/prepare.py makes from the GGUF;
both systems load that folder), LoRA r=16, alpha=32, target_modules="all-linear", dropout 0, float32,
eager attention, one fixed batch of --batch rows x --seq token ids (every position attended, every
label counted), 2 threads each. Both start from the same adapter (peft's initialization, saved once
and loaded by dsum with --adapter), so their losses must agree step after step.

One step = forward + backward + AdamW update (lr 2e-4, betas 0.9/0.999, eps 1e-8, no weight decay)
+ zero grad. PyTorch: `model(input_ids, attention_mask, labels).loss.backward()`,
`torch.optim.AdamW.step()`. dsum: `Trainable::accumulate` + the same AdamW written inline in the
example (dsum's training loop and optimizer are separate work; the update touches 4.9M values).
Each system runs in its own process: load, one warm-up step, then --steps timed steps; per round
the best and median step are kept; systems alternate within a round.
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

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
    "same: make many identical copies of a text so that many people can read it."
)
LORA = dict(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
LR = 2e-4


def load_peft(hf, threads):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32, attn_implementation="eager")
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))


def prepare(hf, work, batch, seq, threads):
    """ids.json (rows of `seq` ids from the text, each row starting elsewhere) and the
    initial adapter, written once."""
    from transformers import AutoTokenizer
    ids_path = os.path.join(work, f"ids-{batch}x{seq}.json")
    adapter = os.path.join(work, "adapter")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(ids_path):
        text_ids = AutoTokenizer.from_pretrained(hf)(TEXT)["input_ids"]
        stream = text_ids
        while len(stream) < (batch - 1) * 61 + seq:
            stream = stream + text_ids
        rows = [stream[r * 61:r * 61 + seq] for r in range(batch)]
        with open(ids_path + ".tmp", "w") as f:
            json.dump(rows, f)
        os.replace(ids_path + ".tmp", ids_path)
    if not os.path.exists(os.path.join(adapter, "adapter_model.safetensors")):
        load_peft(hf, threads).save_pretrained(adapter)
    return ids_path, os.path.join(adapter, "adapter_model.safetensors")


def worker_torch(hf, ids_path, batch, seq, steps, threads):
    import torch
    t0 = time.perf_counter()
    model = load_peft(hf, threads)
    # Same start as dsum: the saved adapter (peft's init is seeded, but load it to be sure).
    from safetensors.torch import load_file
    from peft import set_peft_model_state_dict
    set_peft_model_state_dict(model, load_file(os.path.join(os.path.dirname(ids_path), "adapter",
                                                            "adapter_model.safetensors")))
    model.train()
    rows = [r[:seq] for r in json.load(open(ids_path))[:batch]]
    x = torch.tensor(rows)
    mask = torch.ones_like(x)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR,
                            betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    load_s = time.perf_counter() - t0
    step_s, fb_s, losses = [], [], []
    for _ in range(steps):
        t = time.perf_counter()
        loss = model(input_ids=x, attention_mask=mask, labels=x).loss
        loss.backward()
        fb = time.perf_counter() - t
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t)
        fb_s.append(fb)
        losses.append(loss.item())
        print(f"torch step {len(losses)}: loss {losses[-1]:.6f}, {step_s[-1]:.3f} s", file=sys.stderr)
    print(json.dumps({"trainable_params": trainable, "load_s": load_s, "step_s": step_s,
                      "fwd_bwd_s": fb_s, "loss": losses, "torch": torch.__version__}))


def cpu_busy():
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_system(cmd, env):
    """Run one worker process; returns its JSON, the other processes' CPU (cores) meanwhile
    and the 1-minute load average at the end."""
    t, b, o = time.perf_counter(), cpu_busy(), own_cpu()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True, text=True)
    wall = time.perf_counter() - t
    other = max(0.0, (cpu_busy() - b) - (own_cpu() - o)) / wall
    return json.loads(p.stdout.strip().splitlines()[-1]), other, os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/work/bench-cache")
    ap.add_argument("--dsum", help="the lora_step example binary")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run (after 1 warm-up)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    a = ap.parse_args()
    hf = os.path.join(a.cache, "smollm2-hf")
    if a.worker:
        return worker_torch(hf, a.ids, a.batch, a.seq, a.steps, a.threads)  # --steps counts the warm-up here
    ids, adapter = prepare(hf, os.path.join(a.cache, "lora_step"), a.batch, a.seq, a.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
               RAYON_NUM_THREADS=str(a.threads))
    shape = ["--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps + 1)]
    cmds = {
        "dsum": [a.dsum, "--model", hf, "--ids", ids, "--adapter", adapter, "--lr", str(LR)] + shape,
        "torch": [sys.executable, __file__, "--worker", "--cache", a.cache, "--ids", ids,
                  "--threads", str(a.threads)] + shape,
    }
    runs = {k: [] for k in cmds}
    for rnd in range(a.rounds):
        for name, cmd in cmds.items():
            out, other, load = run_system(cmd, env)
            timed = out["step_s"][1:]
            out.update(best=min(timed), median=statistics.median(timed), other_cores=other, loadavg=load,
                       fwd_bwd_median=statistics.median(out["fwd_bwd_s"][1:]))
            runs[name].append(out)
            print(f"round {rnd + 1} {name:5s} best {out['best']:.3f} s/step, median {out['median']:.3f}, "
                  f"other processes {other:.2f} cores, load {load:.2f}", file=sys.stderr, flush=True)

    best = {k: min(r["best"] for r in v) for k, v in runs.items()}
    med = {k: min(r["median"] for r in v) for k, v in runs.items()}
    fb = {k: min(r["fwd_bwd_median"] for r in v) for k, v in runs.items()}
    print(f"\nSmolLM2-135M, LoRA r=16 all-linear, batch {a.batch} x {a.seq} tokens, {a.threads} threads; "
          f"{a.steps} timed steps after 1 warm-up, {a.rounds} rounds\n")
    print("| system | s/step best | s/step median | fwd+bwd median | dsum speed-up (best / median) |")
    print("|---|---|---|---|---|")
    names = {"dsum": "dsum", "torch": "PyTorch + peft"}
    for k in ("dsum", "torch"):
        sp = "-" if k == "dsum" else f"{best[k] / best['dsum']:.2f}x / {med[k] / med['dsum']:.2f}x"
        print(f"| {names[k]} | {best[k]:.3f} | {med[k]:.3f} | {fb[k]:.3f} | {sp} |")
    oc = [r["other_cores"] for v in runs.values() for r in v]
    la = [r["loadavg"] for v in runs.values() for r in v]
    print(f"\nother processes during the runs: {min(oc):.2f}-{max(oc):.2f} cores (of {os.cpu_count()}); "
          f"1-min load average {min(la):.2f}-{max(la):.2f}")
    print(f"trainable parameters: dsum {runs['dsum'][0]['trainable_params']:,}, "
          f"peft {runs['torch'][0]['trainable_params']:,}")
    dl, tl = runs["dsum"][0]["loss"], runs["torch"][0]["loss"]
    print("losses per step (dsum / torch / relative difference):")
    for i, (x, y) in enumerate(zip(dl, tl)):
        print(f"  step {i + 1}: {x:.6f} / {y:.6f} / {abs(x - y) / abs(y):.1e}")
    rel = abs(dl[0] - tl[0]) / abs(tl[0])
    print(f"first-step loss {'agrees' if rel <= 1e-4 else 'DISAGREES'} (relative difference {rel:.1e}, limit 1e-4)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "best": best, "median": med, "first_loss_rel": rel}, f, indent=1)
    if rel > 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    main()
