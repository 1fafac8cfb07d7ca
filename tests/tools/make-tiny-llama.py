#!/usr/bin/env python3
"""Writes a tiny random-weight llama model (a few MB) that llama-server loads and serves on CPU.

The tokenizer comes from llama.cpp's own vocab-only test file (models/ggml-vocab-llama-spm.gguf):
its tokenizer.* keys are copied as they are. Weights are seeded random f16/f32 tensors, so the
model's text is noise, but every loading phase of llama.cpp runs as it does for a real model.
Run with gguf-py (the same llama.cpp tree) on PYTHONPATH.
"""
import argparse

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

# Small enough to load in well under a second, large enough to have every tensor kind.
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_LAYER = 2
N_FF = 128
N_CTX_TRAIN = 2048


def copy_tokenizer(reader: GGUFReader, writer: GGUFWriter) -> int:
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main_type = field.types[0]
        if main_type == GGUFValueType.ARRAY:
            sub_type = field.types[-1]
            values = field.contents()
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(values)
            writer.add_key_value(key, values, main_type, sub_type=sub_type)
        else:
            writer.add_key_value(key, field.contents(), main_type)
    if n_vocab == 0:
        raise SystemExit("the vocab file has no tokenizer.ggml.tokens")
    return n_vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", required=True, help="models/ggml-vocab-llama-spm.gguf")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    rng = np.random.default_rng(1151)
    writer = GGUFWriter(args.out, "llama")
    writer.add_name("nodectl-tiny-llama")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(1)  # mostly f16
    n_vocab = copy_tokenizer(GGUFReader(args.vocab), writer)
    writer.add_vocab_size(n_vocab)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    def norm(n: int) -> np.ndarray:
        return np.ones((n,), dtype=np.float32)

    # numpy shapes are (rows, cols); gguf stores them reversed, as llama.cpp expects.
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm(N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(N_EMBD * N_HEAD_KV // N_HEAD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(N_EMBD * N_HEAD_KV // N_HEAD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm(N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", norm(N_EMBD))
    writer.add_tensor("output.weight", weight(n_vocab, N_EMBD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
