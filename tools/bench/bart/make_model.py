#!/usr/bin/env python3
"""Create the benchmark model once: a random-init BART with KoBART dimensions.

Writes (if missing) under CACHE (default /work/bench-cache/bart):
  hf/        transformers save_pretrained folder (safetensors) + a 30000-token WordLevel tokenizer
  ct2-f32/   CTranslate2 conversion, float32
  ct2-int8/  CTranslate2 conversion, int8 quantization
  inputs.json  the benchmark inputs (random non-special ids, fixed seed)

The eos logit is made unreachable through final_logits_bias[eos] = -1e4 (a real model
parameter that every system applies), so every system decodes exactly max_new_tokens tokens
without relying on each engine's own min-length rule.
"""
import json
import os
import sys

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig, PreTrainedTokenizerFast

VOCAB = 30000
SEED = 1234
SPECIALS = ["<s>", "</s>", "<unk>", "<pad>", "<mask>"]  # ids 0..4 (bos 0, eos 1, pad 3)
N_SPECIAL = len(SPECIALS)
SRC_LEN = 256
N_ROWS = 32


def make_hf(out):
    torch.manual_seed(SEED)
    cfg = BartConfig(
        vocab_size=VOCAB, d_model=768, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=16, decoder_attention_heads=16,
        encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1026,
        activation_function="gelu", scale_embedding=False,
        pad_token_id=3, bos_token_id=0, eos_token_id=1, decoder_start_token_id=1,
        forced_bos_token_id=None, forced_eos_token_id=None,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )
    model = BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias[0, 1] = -1e4  # eos never wins
    model.generation_config = GenerationConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=3, decoder_start_token_id=1,
        forced_bos_token_id=None, forced_eos_token_id=None,
    )
    model.save_pretrained(out, safe_serialization=True)
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for i in range(N_SPECIAL, VOCAB):
        vocab[f"t{i}"] = i
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>",
    )
    fast.save_pretrained(out)


def convert_ct2(hf, out, quantization):
    import ctranslate2.converters

    class Converter(ctranslate2.converters.TransformersConverter):
        # ctranslate2 4.8.5 reads config.normalize_before, which transformers 4.57 no longer
        # sets on BartConfig (BART is post-LN: False).
        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            if not hasattr(model.config, "normalize_before"):
                model.config.normalize_before = False
            return model

    Converter(hf).convert(out, quantization=quantization, force=True)


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else "/work/bench-cache/bart"
    hf = os.path.join(cache, "hf")
    if not os.path.exists(os.path.join(hf, "model.safetensors")):
        print(f"creating {hf}", flush=True)
        make_hf(hf)
    for name, q in (("ct2-f32", "float32"), ("ct2-int8", "int8")):
        d = os.path.join(cache, name)
        if not os.path.exists(os.path.join(d, "model.bin")):
            print(f"converting to {d} ({q})", flush=True)
            convert_ct2(hf, d, q)
    inp = os.path.join(cache, "inputs.json")
    if not os.path.exists(inp):
        rng = np.random.default_rng(SEED)
        rows = rng.integers(N_SPECIAL, VOCAB, size=(N_ROWS, SRC_LEN)).tolist()
        with open(inp, "w") as f:
            json.dump(rows, f)


if __name__ == "__main__":
    main()
