"""Dequantize the SmolLM2 GGUF to an f32 transformers folder and convert it to CTranslate2 float32.

    python prepare.py GGUF CACHE_DIR

Writes CACHE_DIR/smollm2-hf (safetensors) and CACHE_DIR/smollm2-ct2-f32, once (skipped when present).
Never inside the repository.
"""
import os, subprocess, sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, cache = sys.argv[1], sys.argv[2]
hf = os.path.join(cache, "smollm2-hf")
ct2 = os.path.join(cache, "smollm2-ct2-f32")
if not os.path.exists(os.path.join(hf, "config.json")):
    d, name = os.path.split(os.path.abspath(gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32)
    model.save_pretrained(hf, safe_serialization=True)
    AutoTokenizer.from_pretrained(d, gguf_file=name).save_pretrained(hf)
if not os.path.exists(os.path.join(ct2, "model.bin")):
    conv = os.path.join(os.path.dirname(sys.executable), "ct2-transformers-converter")
    subprocess.run([conv, "--model", hf, "--output_dir", ct2, "--quantization", "float32", "--force"], check=True)
print(hf, ct2)
