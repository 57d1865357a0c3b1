#!/usr/bin/env python3
"""Random-init checkpoints for the GPU benchmark (issue 9 item 5), written as Hugging Face folders.

    make_models.py --out DIR [--tiny] [--device cuda|cpu] [--only llama,bart]

Writes, each once (skipped when its model.safetensors exists):
  DIR/llama/  Llama-3.2-3B shape (hidden 3072, 28 layers, 24 heads / 8 KV heads of 128,
              intermediate 8192, vocab 128256, tied embeddings, llama3 RoPE scaling), bf16,
              one model.safetensors (~6.4 GB: never inside the repository)
  DIR/bart/   KoBART shape (d_model 768, 6+6 layers, 16 heads, FFN 3072, vocab 30000), float32,
              eos made unreachable by final_logits_bias (as tools/bench/bart/make_model.py)
Both with a word-level tokenizer ("w123" is id 123), so a text of N words is N tokens and both
stacks build the same ids; the Llama one carries Llama 3's 256 special tokens at 128000+ and its
chat template. --tiny writes the same layouts at toy sizes (CPU tests of the harness).

config.json is written by hand in the layout of the real checkpoints (transformers 5 would save
`rope_parameters`, which dsum does not read); the weights come from transformers' own init, run on
--device so the 3B model is drawn on the GPU in seconds.
"""
import argparse
import json
import os
import shutil
import sys

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (BartConfig, BartForConditionalGeneration, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

SEED = 1234

# Meta-Llama-3 instruct template (tools/fixtures/make_llama_fixtures.py LLAMA3_TEMPLATE).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# Llama 3's special tokens by offset from the first special id (the rest are reserved_special_token_N).
LLAMA3_NAMED = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
                6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
                10: "<|python_tag|>"}
N_SPECIAL_LLAMA = 256
# Plain words of the Llama vocabulary that the chat template writes (ids 1..3); 0 is <unk>.
ROLE_WORDS = ["system", "user", "assistant"]
FIRST_FREE_WORD = 1 + len(ROLE_WORDS)

BART_SPECIALS = ["<s>", "</s>", "<unk>", "<pad>", "<mask>"]  # ids 0..4 (bos 0, eos 1, pad 3)


def llama_config(tiny):
    if tiny:
        dims = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512)
        rope_orig = 64
    else:
        dims = dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                    num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                    max_position_embeddings=131072)
        rope_orig = 8192
    first_special = dims["vocab_size"] - N_SPECIAL_LLAMA
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **dims,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": rope_orig, "rope_type": "llama3"},
        "tie_word_embeddings": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": first_special,
        "eos_token_id": [first_special + 1, first_special + 8, first_special + 9],
        "torch_dtype": "bfloat16",
    }


def bart_config(tiny):
    if tiny:
        dims = dict(vocab_size=1000, d_model=64, encoder_layers=1, decoder_layers=1,
                    encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                    decoder_ffn_dim=128, max_position_embeddings=1026)
    else:
        dims = dict(vocab_size=30000, d_model=768, encoder_layers=6, decoder_layers=6,
                    encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=3072,
                    decoder_ffn_dim=3072, max_position_embeddings=1026)
    return {
        "architectures": ["BartForConditionalGeneration"],
        "model_type": "bart",
        **dims,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": 3, "bos_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 1,
        "forced_bos_token_id": None, "forced_eos_token_id": None,
        "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
        "normalize_before": False, "add_final_layer_norm": False,
        "torch_dtype": "float32",
    }


def word_level(words, specials):
    """A whitespace word-level tokenizer: `words` get ids 0.., `specials` the ids after them."""
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tk


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_tokenizer(fast, out, chat_template=None):
    fast.save_pretrained(out)
    # transformers 5 may keep the template only in chat_template.jinja: put it in
    # tokenizer_config.json as well, where every loader looks.
    if chat_template is not None:
        p = os.path.join(out, "tokenizer_config.json")
        with open(p) as f:
            cfg = json.load(f)
        cfg["chat_template"] = chat_template
        write_json(p, cfg)


def build(out, cfg, make_model, dtype, device, tokenizer, generation):
    """Init the model on `device`, save its weights as one model.safetensors, then write the
    hand-made config.json, generation_config.json and the tokenizer. Atomic: DIR.tmp renamed."""
    if os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"{out}: exists", file=sys.stderr)
        return
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(SEED)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = make_model()
    finally:
        torch.set_default_dtype(old)
    model.eval()
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="100GB")
    del model
    for extra in ("config.json", "generation_config.json"):
        if os.path.exists(os.path.join(tmp, extra)):
            os.remove(os.path.join(tmp, extra))
    write_json(os.path.join(tmp, "config.json"), cfg)
    write_json(os.path.join(tmp, "generation_config.json"), generation)
    tokenizer(tmp)
    if not os.path.exists(os.path.join(tmp, "model.safetensors")):
        raise SystemExit(f"{tmp}: expected one model.safetensors, got {sorted(os.listdir(tmp))}")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    print(f"{out}: written ({size / 1e9:.2f} GB)", file=sys.stderr)


def make_llama(out, tiny, device):
    cfg = llama_config(tiny)
    first_special = cfg["vocab_size"] - N_SPECIAL_LLAMA
    words = ["<unk>"] + ROLE_WORDS + [f"w{i}" for i in range(FIRST_FREE_WORD, first_special)]
    specials = [LLAMA3_NAMED.get(i, f"<|reserved_special_token_{i}|>") for i in range(N_SPECIAL_LLAMA)]

    def tokenizer(d):
        tk = word_level(words, specials)
        assert tk.token_to_id("<|eot_id|>") == first_special + 9
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
            pad_token="<|finetune_right_pad_id|>", unk_token="<unk>", model_max_length=131072,
            chat_template=LLAMA3_TEMPLATE)
        save_tokenizer(fast, d, LLAMA3_TEMPLATE)

    generation = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                  "pad_token_id": first_special + 4, "do_sample": False}
    hf_cfg = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")})
    build(out, cfg, lambda: LlamaForCausalLM(hf_cfg), torch.bfloat16, device, tokenizer, generation)


def make_bart(out, tiny, device):
    cfg = bart_config(tiny)
    words = BART_SPECIALS + [f"w{i}" for i in range(len(BART_SPECIALS), cfg["vocab_size"])]

    def tokenizer(d):
        # KoBART's specials are plain vocabulary entries at ids 0..4.
        tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
            pad_token="<pad>", mask_token="<mask>")
        save_tokenizer(fast, d)

    def model():
        hf_cfg = BartConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")})
        m = BartForConditionalGeneration(hf_cfg)
        with torch.no_grad():
            m.final_logits_bias[0, 1] = -1e4  # eos never wins: every system decodes max_new_tokens
        return m

    generation = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 3, "decoder_start_token_id": 1,
                  "forced_bos_token_id": None, "forced_eos_token_id": None}
    build(out, cfg, model, torch.float32, device, tokenizer, generation)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default="llama,bart")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    only = a.only.split(",")
    if "llama" in only:
        make_llama(os.path.join(a.out, "llama"), a.tiny, a.device)
    if "bart" in only:
        make_bart(os.path.join(a.out, "bart"), a.tiny, a.device)


if __name__ == "__main__":
    main()
