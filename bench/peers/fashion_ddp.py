#!/usr/bin/python3
"""The Fashion-MNIST CNN of examples/fashion_mnist in PyTorch, trained by
PyTorch's own DDP (Gloo) with one of its communication hooks: the same layers
and default initialisation scheme, the same normalised images from Debian's
dataset-fashion-mnist, the same shuffling (a permutation per epoch from the
seed), batch per rank, Adam and schedule.

    mpirun -np 4 /usr/bin/python3 bench/peers/fashion_ddp.py --hook fp16
    scripts/netsim --ranks 4 --rate 1gbit -- /usr/bin/python3 bench/peers/fashion_ddp.py \
        --master_addr 10.77.0.1 --ifname eth0

Rank and world come from OpenMPI's variables (or RANK and WORLD_SIZE). Rank 0
prints one line per epoch and a JSON line; --metrics_csv writes
epoch,train_loss,test_accuracy,train_seconds.

    fashion_ddp.py --check DIR   (tests/examples: the model check)

loads what `fashion_mnist --peer_check_dir DIR` wrote and exits non-zero
unless this model has the same parameters and gives the same loss.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddp_common import add_ddp_flags, init_ddp

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's training-set statistics, as examples/common/idx_reader.cpp


def read_idx(path, dims):
    try:
        data = gzip.open(path, "rb").read()
    except OSError as e:
        sys.exit(f"fashion_ddp: cannot read {path} ({e}); install the Debian package dataset-fashion-mnist")
    magic, = struct.unpack(">I", data[:4])
    if magic != 0x800 + dims:
        sys.exit(f"fashion_ddp: {path}: IDX magic {magic:#x}, expected {0x800 + dims:#x}")
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def load(data_dir, prefix):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"), 3)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), 1)
    return images.float().div_(255.0).sub_(MEAN).div_(STD).unsqueeze(1).contiguous(), labels.long()


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def check(a):
    d = a.check
    meta = json.load(open(os.path.join(d, "meta.json")))
    model = Cnn()
    mine = [(n, list(p.shape)) for n, p in model.named_parameters()]
    theirs = [(n, [int(s) for s in shape.split("x")]) for n, shape in (l.split() for l in open(os.path.join(d, "names.txt")))]
    if mine != theirs:
        sys.exit(f"fashion_ddp --check: parameters differ:\n  pytorch {mine}\n  lowbit  {theirs}")
    flat = torch.from_file(os.path.join(d, "params.bin"), size=meta["parameters"], dtype=torch.float32)
    with torch.no_grad():
        offset = 0
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    images, labels = load(a.data_dir, "train")
    b = meta["batch"]
    x, y = images[:b], labels[:b]
    theirs_x = torch.from_file(os.path.join(d, "images.bin"), size=x.numel(), dtype=torch.float32)
    theirs_y = torch.from_file(os.path.join(d, "labels.bin"), size=b, dtype=torch.int64)
    if not (torch.equal(x.reshape(-1), theirs_x) and torch.equal(y, theirs_y)):
        sys.exit("fashion_ddp --check: the images or labels differ from lowbit's (normalisation or order)")
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()
    rel = abs(loss - meta["loss"]) / meta["loss"]
    print(json.dumps({"check": "fashion_mnist", "parameters": offset, "pytorch_loss": loss,
                      "lowbit_loss": meta["loss"], "relative_difference": rel}))
    if offset != meta["parameters"] or rel > 1e-5:
        sys.exit(f"fashion_ddp --check: loss {loss} here, {meta['loss']} in lowbit (relative difference {rel:.3g})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max_train_examples", type=int, default=0, help="use only the first N (0: all)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    add_ddp_flags(p, 29534)
    p.add_argument("--metrics_csv", default="")
    p.add_argument("--check", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.check:
        return check(a)
    import torch.distributed as dist

    train_x, train_y = load(a.data_dir, "train")
    test_x, test_y = load(a.data_dir, "t10k")
    torch.manual_seed(a.seed)
    model = Cnn()
    ddp, rank, world = init_ddp(a, model)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    n = train_x.size(0) if a.max_train_examples <= 0 else min(train_x.size(0), a.max_train_examples)
    steps = n // (a.batch_size * world)
    lead = rank == 0
    csv = open(a.metrics_csv, "w") if lead and a.metrics_csv else None
    if csv:
        csv.write("epoch,train_loss,test_accuracy,train_seconds\n")
    train_seconds, accuracy, train_loss = 0.0, 0.0, 0.0
    for epoch in range(a.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(a.seed * 1000003 + epoch))
        loss_sum = 0.0
        for step in range(steps):
            t0 = time.perf_counter()
            idx = order[(step * world + rank) * a.batch_size:(step * world + rank + 1) * a.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(ddp(train_x[idx]), train_y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            train_seconds += time.perf_counter() - t0
        model.eval()
        lo, hi = test_x.size(0) * rank // world, test_x.size(0) * (rank + 1) // world
        with torch.no_grad():
            correct = sum((model(test_x[i:min(i + 1000, hi)]).argmax(1) == test_y[i:min(i + 1000, hi)]).sum().item()
                          for i in range(lo, hi, 1000))
        model.train()
        t = torch.tensor([correct, loss_sum / steps], dtype=torch.float64)
        dist.all_reduce(t)
        accuracy, train_loss = t[0].item() / test_x.size(0), t[1].item() / world
        if lead:
            print(f"epoch {epoch + 1}  train {train_loss:.4f}  test accuracy {accuracy:.4f}  "
                  f"images/s {a.batch_size * world * steps * (epoch + 1) / train_seconds:.0f}", flush=True)
            if csv:
                csv.write(f"{epoch + 1},{train_loss},{accuracy},{train_seconds}\n")
                csv.flush()
    seconds = torch.tensor([train_seconds], dtype=torch.float64)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    if lead:
        print(json.dumps({"peer": "pytorch_ddp", "model": "fashion_mnist", "hook": a.hook, "world_size": world,
                          "epochs": a.epochs, "test_accuracy": accuracy, "train_loss": train_loss,
                          "train_seconds": seconds.item(), "step_seconds": seconds.item() / (steps * a.epochs),
                          "images_per_second": a.batch_size * world * steps * a.epochs / seconds.item(),
                          "torch": torch.__version__}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
