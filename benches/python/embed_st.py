#!/usr/bin/env python3
"""sentence-transformers embedding throughput, to compare with `cargo bench --bench embed`.

    deploy/local/models.sh
    PY=$(deploy/local/python-bench.sh | tail -n 1)
    "$PY" benches/python/embed_st.py models/all-MiniLM-L6-v2 texts.json [--batch-sizes 8,32] [--threads 2]

TEXTS_JSON is a JSON array of strings. The model is loaded from the local sentence-transformers
folder MODEL_DIR only: the Hugging Face hub is never contacted. After a warm-up encode, every
text is embedded once per batch size (normalized, max_seq_length 256) and one line per batch
size is printed in the same shape as the Rust benchmark's.
"""

import argparse
import json
import os
import sys
import time


def batch_sizes(value):
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {value!r}")
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers: {value!r}")
    return sizes


def positive_int(value):
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return number


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="local sentence-transformers folder")
    parser.add_argument("texts_json", metavar="TEXTS_JSON", help="JSON array of strings")
    parser.add_argument("--batch-sizes", type=batch_sizes, default=[8, 32], help="default: 8,32")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args()

    if not os.path.isfile(os.path.join(args.model_dir, "modules.json")):
        parser.error(f"{args.model_dir} is not a sentence-transformers folder (no modules.json)")
    with open(args.texts_json, encoding="utf-8") as f:
        texts = json.load(f)
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        parser.error(f"{args.texts_json} must hold a non-empty JSON array of strings")

    # Must be set before transformers / huggingface_hub are imported: nothing may reach a hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # Keep every thread pool (OpenMP, MKL, the tokenizers' rayon pool) to the requested size.
    threads = str(args.threads)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[name] = threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    import torch
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bar on stderr

    torch.set_num_threads(args.threads)

    model = SentenceTransformer(args.model_dir, device="cpu", local_files_only=True)
    model.max_seq_length = 256
    model.eval()

    def encode(batch, size):
        return model.encode(
            batch,
            batch_size=size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    print(
        f"sentence-transformers {sentence_transformers.__version__}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    largest = max(args.batch_sizes)
    encode(texts[:largest], largest)  # warm-up

    with torch.inference_mode():
        for size in args.batch_sizes:
            started = time.perf_counter()
            embeddings = encode(texts, size)
            secs = time.perf_counter() - started
            if embeddings.shape[0] != len(texts):
                sys.exit(f"expected {len(texts)} embeddings, got {embeddings.shape[0]}")
            rate = len(texts) / secs
            print(f"sentence-transformers batch {size:>2}: {rate:>7.1f} chunks/s ({secs:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
