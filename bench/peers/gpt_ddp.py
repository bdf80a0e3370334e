#!/usr/bin/python3
"""The GPT of examples/gpt in PyTorch, trained by PyTorch's own DDP.

What a user runs today, next to lowbit's example in scripts/bench.sh peers:
the same model (nanoGPT's layout, the same parameter names, shapes and
initialisation scheme), the same King James Bible windows (the same
SplitMix64 offsets per seed, rank and step), the same AdamW with weight decay
on matrices and embeddings, warm-up plus cosine schedule and gradient
clipping, on Debian's python3-torch with the Gloo backend and one of PyTorch's
communication hooks (allreduce, fp16, PowerSGD with error feedback and warm
start).

    mpirun -np 4 /usr/bin/python3 bench/peers/gpt_ddp.py --hook fp16
    scripts/netsim --ranks 4 --rate 1gbit -- /usr/bin/python3 bench/peers/gpt_ddp.py \
        --master_addr 10.77.0.1 --ifname eth0

Rank and world come from OpenMPI's variables (or torchrun's RANK and
WORLD_SIZE). Rank 0 prints progress and one JSON line; --metrics_csv writes
step,train_loss,val_loss,train_seconds per evaluation.

    gpt_ddp.py --check DIR   (no DDP: tests/examples/gpt_peer_test.sh)

loads the weights, batch and loss that tests/examples/gpt_peer_dump wrote
from lowbit's model and exits non-zero unless this model has the same
parameters and gives the same loss on that batch.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddp_common import add_ddp_flags, init_ddp

MASK64 = (1 << 64) - 1
PRESETS = {"tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
           "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=128)}


def mix(x):
    """SplitMix64's finaliser, as examples/gpt/text_data.cpp's Mix."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


class Corpus:
    """The byte vocabulary that occurs, sorted; a 90/10 split."""

    def __init__(self, path, val_fraction=0.1):
        data = open(path, "rb").read()
        if not data:
            sys.exit(f"gpt_ddp: the corpus {path} is empty")
        self.vocab = sorted(set(data))
        ids = bytes(range(256)).maketrans(bytes(self.vocab), bytes(range(len(self.vocab))))
        all_ids = torch.frombuffer(bytearray(data.translate(ids)), dtype=torch.uint8).long()
        split = math.ceil(len(data) * (1.0 - val_fraction))
        self.train, self.val = all_ids[:split], all_ids[split:]

    def train_windows(self, batch, block, seed, rank, step):
        starts = self.train.numel() - block
        key = mix(mix(mix(seed) ^ (rank & MASK64)) ^ (step & MASK64))
        offsets = torch.tensor([mix(key ^ mix(i)) % starts for i in range(batch)], dtype=torch.long)
        return self.train[offsets.unsqueeze(1) + torch.arange(block + 1).unsqueeze(0)]

    def val_windows(self, count, block):
        span = self.val.numel() - (block + 1)
        offsets = torch.tensor([0 if count == 1 else span * i // (count - 1) for i in range(count)])
        return self.val[offsets.unsqueeze(1) + torch.arange(block + 1).unsqueeze(0)]


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head, self.n_embd = c["n_head"], c["n_embd"]
        self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"])
        self.c_proj = nn.Linear(c["n_embd"], c["n_embd"])
        # A plain attribute, not a buffer: DDP would broadcast it, and Gloo has no bool type.
        self.future = torch.ones(c["block_size"], c["block_size"], dtype=torch.bool).triu(1)

    def forward(self, x):
        B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, hd).transpose(1, 2) for t in (q, k, v))
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(self.future[:T, :T], float("-inf")).softmax(-1)
        return self.c_proj(torch.matmul(att, v).transpose(1, 2).contiguous().view(B, T, C))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c["n_embd"], 4 * c["n_embd"])
        self.c_proj = nn.Linear(4 * c["n_embd"], c["n_embd"])

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c["n_embd"])
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c["n_embd"])
        self.mlp = Mlp(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.wpe = nn.Embedding(c["block_size"], c["n_embd"])
        self.h = nn.ModuleList([Block(c) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(c["n_embd"])
        residual_std = 0.02 / math.sqrt(2.0 * c["n_layer"])
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "ln_" in name:
                    continue
                if p.dim() == 1:
                    p.zero_()
                else:
                    p.normal_(0.0, residual_std if name.endswith("c_proj.weight") else 0.02)

    def forward(self, idx):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.h:
            x = block(x)
        return torch.matmul(self.ln_f(x), self.wte.weight.t())

    def loss(self, windows):
        T = windows.size(1) - 1
        logits = self(windows[:, :T])
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1))


def learning_rate(a, step):
    if step < a.lr_warmup:
        return a.lr * (step + 1) / a.lr_warmup
    progress = min(1.0, (step - a.lr_warmup) / max(1, a.steps - a.lr_warmup))
    floor = a.lr * a.min_lr_ratio
    return floor + 0.5 * (a.lr - floor) * (1.0 + math.cos(math.pi * progress))


def check(a):
    """Same parameters and the same loss as lowbit's model from the same weights."""
    d = a.check
    meta = json.load(open(os.path.join(d, "meta.json")))
    corpus = Corpus(a.corpus)
    c = dict(PRESETS[meta["preset"]], vocab_size=len(corpus.vocab))
    model = Gpt(c)
    names = [line.split() for line in open(os.path.join(d, "names.txt"))]
    mine = [(n, list(p.shape)) for n, p in model.named_parameters()]
    theirs = [(n, [int(s) for s in shape.split("x")]) for n, shape in names]
    if mine != theirs:
        sys.exit(f"gpt_ddp --check: parameters differ:\n  pytorch {mine}\n  lowbit  {theirs}")
    flat = torch.from_file(os.path.join(d, "params.bin"), size=meta["parameters"], dtype=torch.float32)
    total = sum(p.numel() for p in model.parameters())
    if total != meta["parameters"]:
        sys.exit(f"gpt_ddp --check: {total} parameters here, lowbit has {meta['parameters']}")
    with torch.no_grad():
        offset = 0
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    batch = corpus.train_windows(meta["batch"], c["block_size"], meta["seed"], 0, meta["step"])
    theirs_batch = torch.from_file(os.path.join(d, "batch.bin"), size=batch.numel(), dtype=torch.int64)
    if not torch.equal(batch.reshape(-1), theirs_batch):
        sys.exit("gpt_ddp --check: the training windows differ from lowbit's TrainWindows")
    loss = model.loss(batch).item()
    rel = abs(loss - meta["loss"]) / meta["loss"]
    print(json.dumps({"check": "gpt", "parameters": total, "pytorch_loss": loss, "lowbit_loss": meta["loss"],
                      "relative_difference": rel}))
    if rel > 1e-5:
        sys.exit(f"gpt_ddp --check: loss {loss} here, {meta['loss']} in lowbit (relative difference {rel:.3g})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "../../build/data/bible-kjv.txt"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr_warmup", type=int, default=50)
    p.add_argument("--min_lr_ratio", type=float, default=0.1)
    p.add_argument("--grad_clip", type=float, default=1.0)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--eval_interval", type=int, default=100)
    p.add_argument("--val_windows", type=int, default=512)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bucket_cap_mb", type=float, default=25)
    add_ddp_flags(p, 29533)
    p.add_argument("--metrics_csv", default="")
    p.add_argument("--check", default="", help="compare with lowbit's dump in this folder and exit")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.check:
        return check(a)

    import torch.distributed as dist

    corpus = Corpus(a.corpus)
    c = dict(PRESETS[a.preset], vocab_size=len(corpus.vocab))
    torch.manual_seed(a.seed)
    model = Gpt(c)
    ddp, rank, world = init_ddp(a, model, bucket_cap_mb=a.bucket_cap_mb)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    val = corpus.val_windows(a.val_windows, c["block_size"])
    lead = rank == 0
    params = sum(p.numel() for p in model.parameters())
    if lead:
        print(f"gpt_ddp: {params} parameters, {world} rank(s), PyTorch {torch.__version__} DDP (gloo), "
              f"hook {a.hook}, {a.steps} steps", flush=True)
    csv = open(a.metrics_csv, "w") if lead and a.metrics_csv else None
    if csv:
        csv.write("step,train_loss,val_loss,train_seconds\n")

    def val_loss():
        model.eval()
        n = val.size(0)
        lo, hi = n * rank // world, n * (rank + 1) // world
        total = 0.0
        with torch.no_grad():
            for i in range(lo, hi, 64):
                w = val[i:min(i + 64, hi)]
                total += model.loss(w).item() * w.size(0)
        model.train()
        t = torch.tensor([total], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / n

    train_seconds = interval_loss = 0.0
    interval_steps = 0
    v = train_loss = float("nan")
    for step in range(a.steps):
        t0 = time.perf_counter()
        lr = learning_rate(a, step)
        for g in opt.param_groups:
            g["lr"] = lr
        w = corpus.train_windows(a.batch_size, c["block_size"], a.seed, rank, step)
        opt.zero_grad(set_to_none=False)
        logits = ddp(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1))
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        interval_loss += loss.item()
        interval_steps += 1
        train_seconds += time.perf_counter() - t0
        if (step + 1) % a.eval_interval == 0 or step + 1 == a.steps:
            t = torch.tensor([interval_loss / interval_steps], dtype=torch.float64)
            dist.all_reduce(t)
            train_loss = t.item() / world
            v = val_loss()
            if lead:
                tps = a.batch_size * c["block_size"] * world * (step + 1) / train_seconds
                print(f"step {step + 1}  train {train_loss:.4f}  val {v:.4f}  tokens/s {tps:.0f}", flush=True)
                if csv:
                    csv.write(f"{step + 1},{train_loss},{v},{train_seconds}\n")
                    csv.flush()
            interval_loss, interval_steps = 0.0, 0
    seconds = torch.tensor([train_seconds], dtype=torch.float64)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    if lead:
        print(json.dumps({"peer": "pytorch_ddp", "model": "gpt", "preset": a.preset, "hook": a.hook,
                          "world_size": world, "steps": a.steps, "val_loss": v, "train_loss": train_loss,
                          "train_seconds": seconds.item(), "step_seconds": seconds.item() / a.steps,
                          "tokens_per_second": a.batch_size * c["block_size"] * world * a.steps / seconds.item(),
                          "parameters": params, "torch": torch.__version__}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
