"""Train the small model minillama ships: a SentencePiece BPE tokenizer and a ~4M-parameter Llama, on CPython's own
documentation (pydoc_data, present wherever Python is), with torch on the CPU, seeded.

    python scripts/train_tiny.py [--minutes 12] [--out minillama/data/tiny]

Writes config.json, model.safetensors (float32), tokenizer.model and train_log.json (losses, held-out perplexity)
into a temporary directory and renames it over --out at the end. Not part of CI.
"""
import argparse, json, math, os, random, shutil, tempfile, time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM


def corpus():
    "The pydoc topics, split by topic: every 10th topic (sorted by name) is held out for validation."
    import pydoc_data.topics as t
    names = sorted(t.topics)
    val = {n for i, n in enumerate(names) if i % 10 == 5}
    return ([t.topics[n] for n in names if n not in val], [t.topics[n] for n in names if n in val])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=12.0, help="training time budget (default 12)")
    ap.add_argument("--out", default="minillama/data/tiny", help="output directory")
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    random.seed(a.seed); np.random.seed(a.seed); torch.manual_seed(a.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    train_docs, val_docs = corpus()
    tmp = Path(tempfile.mkdtemp(prefix="train-tiny-", dir=Path(a.out).parent))

    # 1. tokenizer: BPE with byte fallback and identity normalisation, as Llama's
    (tmp / "train.txt").write_text("\n".join(train_docs))
    spm.SentencePieceTrainer.train(
        input=str(tmp / "train.txt"), model_prefix=str(tmp / "tokenizer"), model_type="bpe", vocab_size=a.vocab,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, max_sentence_length=1 << 16, num_threads=os.cpu_count() or 1, minloglevel=2)
    (tmp / "train.txt").unlink(); (tmp / "tokenizer.vocab").unlink()
    sp = spm.SentencePieceProcessor(model_file=str(tmp / "tokenizer.model"))
    enc = lambda docs: np.concatenate([[1] + sp.encode(d) + [2] for d in docs]).astype(np.int64)
    train_ids, val_ids = enc(train_docs), enc(val_docs)
    print(f"tokens: train {len(train_ids):,}, validation {len(val_ids):,}")

    # 2. model: a small Llama (GQA, tied embeddings), trained with transformers' own LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=sp.get_piece_size(), hidden_size=256, intermediate_size=640, num_hidden_layers=5,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    ctx, batch, lr = 256, 16, 2e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(a.seed)

    def batch_of(ids, n):
        starts = torch.randint(0, len(ids) - ctx - 1, (n,), generator=g)
        x = torch.stack([torch.from_numpy(ids[s:s + ctx + 1]) for s in starts.tolist()])
        return x[:, :-1], x[:, 1:]

    def val_loss():
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(val_ids) - ctx - 1, ctx):
                x = torch.from_numpy(val_ids[s:s + ctx + 1])[None]
                tot += model(x[:, :-1], labels=x[:, :-1]).loss.item() * (ctx - 1); n += ctx - 1
        model.train()
        return tot / n

    # time-budgeted cosine schedule: estimate steps from the first few
    log, t0, step = [], time.time(), 0
    t_probe = time.time()
    for _ in range(3):
        x, y = batch_of(train_ids, batch); model(x, labels=x).loss.backward(); opt.zero_grad()
    steps = max(50, int(a.minutes * 60 / ((time.time() - t_probe) / 3)))
    print(f"{n_params/1e6:.2f}M parameters; {steps} steps of {batch}x{ctx} tokens")
    model.train()
    for step in tqdm(range(steps), desc="training"):
        for pg in opt.param_groups:
            pg["lr"] = lr * min(1, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, _ = batch_of(train_ids, batch)
        loss = model(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad()
        if step % 100 == 0 or step == steps - 1: log.append(dict(step=step, train_loss=round(loss.item(), 4)))
    vl = val_loss()
    print(f"held-out loss {vl:.3f}, perplexity {math.exp(vl):.1f}")
    model.eval().save_pretrained(tmp)
    for f in ("generation_config.json",): (tmp / f).unlink(missing_ok=True)
    (tmp / "train_log.json").write_text(json.dumps(dict(
        corpus="pydoc_data.topics (CPython documentation), every 10th topic held out", params=n_params,
        train_tokens=int(len(train_ids)), val_tokens=int(len(val_ids)), steps=steps, batch=batch, context=ctx,
        minutes=round((time.time() - t0) / 60, 1), val_loss=round(vl, 4), val_perplexity=round(math.exp(vl), 2),
        seed=a.seed, log=log), indent=1))
    tmp.chmod(0o755)
    for f in tmp.iterdir(): f.chmod(0o644)                      # mkdtemp makes them private
    out = Path(a.out)
    if out.exists(): shutil.rmtree(out)
    os.replace(tmp, out)
    print("wrote", out, sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
