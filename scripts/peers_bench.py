#!/usr/bin/python3
"""lowbit against PyTorch DDP on the GPT example (or, with --model fashion,
the Fashion-MNIST CNN): step time per network and time to a target
validation loss (test accuracy), in one run (scripts/bench.sh peers).

Systems: lowbit's examples/gpt with a comm hook or a 1-bit optimizer, and
bench/peers/gpt_ddp.py (the same model, data and optimizer) under PyTorch's
own DDP with its allreduce, fp16 and PowerSGD hooks. Both run on 4 ranks x 1
thread under mpirun, on shared memory and inside scripts/netsim.

The training math does not depend on the network, so the run has two passes:
  quality  each configuration trains the full schedule once on shared memory:
           the steps it needs to reach --target (first evaluation at or below
           it, every --eval_interval steps) and its final validation loss;
  speed    each configuration runs --speed_steps steps on every network: its
           mean training step time (evaluation excluded), and the step time of
           the same tokens with no exchange at all (compute_only: 4 lowbit
           processes of one rank each, side by side).
time_to_target = steps to target x step time on that network. Every run has a
timeout; a run that fails or times out is a row with its status and the tail
of its log, and the script goes on. JSON lines on stdout, a Markdown table at
the end.
"""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PY = "/usr/bin/python3"
PEERS = {"gpt": os.path.join(ROOT, "bench/peers/gpt_ddp.py"),
         "fashion": os.path.join(ROOT, "bench/peers/fashion_ddp.py")}
# label -> (system, flags). The 1-bit optimizers' and the momentum exchange's
# first --freeze_step steps (or their automatic warm-up) average gradients
# (fp16, or through --hook; 4-bit QSGD for the momentum exchange): their speed
# run starts compressing at once, and their time to target counts those steps
# at the step time of the configuration that exchanges the same way (WARMUP).
CONFIGS = {
    "pytorch_allreduce": ("pytorch", ["--hook", "allreduce"]),
    "pytorch_fp16": ("pytorch", ["--hook", "fp16"]),
    "pytorch_powersgd": ("pytorch", ["--hook", "powersgd", "--powersgd_rank", "4"]),
    "lowbit_allreduce": ("lowbit", ["--hook", "allreduce"]),
    "lowbit_fp16": ("lowbit", ["--hook", "fp16"]),
    "lowbit_qsgd4": ("lowbit", ["--hook", "qsgd", "--bits", "4"]),
    # Under AdamW these carry the momentum through the hook's codec after a
    # 4-bit warm-up (docs/gpt.md, "Compression under AdamW"); PowerSGD at the
    # model's width / 8.
    "lowbit_powersgd": ("lowbit", ["--hook", "powersgd"]),
    "lowbit_onebit": ("lowbit", ["--hook", "onebit"]),
    "lowbit_topk": ("lowbit", ["--hook", "topk"]),
    "lowbit_ternary": ("lowbit", ["--hook", "ternary"]),
    "lowbit_powersgd_rank4_gradients": ("lowbit", ["--hook", "powersgd", "--rank", "4", "--compress_gradients"]),
    "lowbit_onebit_adam": ("lowbit", ["--optimizer", "onebit_adam"]),
    "lowbit_onebit_adam_freeze100": ("lowbit", ["--optimizer", "onebit_adam", "--freeze_step", "100"]),
    "lowbit_zeroone_adam": ("lowbit", ["--optimizer", "zeroone_adam"]),
    # LAMB at its own default peak rate (1e-2), not AdamW's: its time to
    # target is the optimizer's as much as the exchange's.
    "lowbit_onebit_lamb": ("lowbit", ["--optimizer", "onebit_lamb", "--freeze_step", "100"]),
    # The same with the warm-up's averaging through a compression hook.
    "lowbit_onebit_adam_fp16": ("lowbit", ["--optimizer", "onebit_adam", "--freeze_step", "100", "--hook", "fp16"]),
    "lowbit_onebit_lamb_fp16": ("lowbit", ["--optimizer", "onebit_lamb", "--freeze_step", "100", "--hook", "fp16"]),
    "lowbit_onebit_lamb_qsgd4": ("lowbit", ["--optimizer", "onebit_lamb", "--freeze_step", "100", "--hook", "qsgd",
                                            "--bits", "4"]),
    # Low-communication training (docs/low_communication.md): inner AdamW at
    # the peak rate measured best for each (local steps on a quarter of the
    # batch take a higher rate than DDP's 1e-3), the pseudo-gradient through
    # qsgd 4-bit.
    # At their defaults (docs/low_communication.md, "At their defaults").
    "lowbit_diloco": ("lowbit", ["--outer", "diloco"]),
    "lowbit_streaming_diloco": ("lowbit", ["--outer", "streaming_diloco"]),
    "lowbit_diloco_h50_qsgd4": ("lowbit", ["--outer", "diloco", "--sync_every", "50", "--hook", "qsgd", "--bits", "4",
                                           "--lr", "4e-3"]),
    "lowbit_streaming_h50_qsgd4": ("lowbit", ["--outer", "streaming_diloco", "--sync_every", "50", "--hook", "qsgd",
                                              "--bits", "4", "--lr", "6e-3"]),
    "lowbit_sparseloco_h10": ("lowbit", ["--outer", "sparseloco", "--sync_every", "10", "--topk", "512",
                                         "--lr", "4e-3"]),
    "lowbit_demo": ("lowbit", ["--optimizer", "demo", "--lr", "2e-3"]),
    # Multi-host (--layout HxR): inside each host uncompressed, across hosts
    # one shard per rank.
    "lowbit_two_level_allreduce": ("lowbit", ["--two_level"]),
    "lowbit_two_level_qsgd4": ("lowbit", ["--two_level", "--hook", "qsgd", "--bits", "4"]),
    "lowbit_two_level_diloco_h50": ("lowbit", ["--two_level", "--outer", "diloco", "--sync_every", "50", "--hook",
                                               "qsgd", "--bits", "4", "--lr", "4e-3"]),
}
# A configuration with a warm-up -> the configuration whose step time its
# warm-up steps take (the 1-bit optimizers average fp16 gradients unless --hook
# says, the momentum exchange 4-bit QSGD ones).
WARMUP = {"lowbit_onebit_adam": "lowbit_fp16", "lowbit_onebit_adam_freeze100": "lowbit_fp16",
          "lowbit_onebit_lamb": "lowbit_fp16", "lowbit_zeroone_adam": "lowbit_fp16",
          "lowbit_onebit_adam_fp16": "lowbit_fp16", "lowbit_onebit_lamb_fp16": "lowbit_fp16",
          "lowbit_onebit_lamb_qsgd4": "lowbit_qsgd4", "lowbit_onebit": "lowbit_qsgd4",
          "lowbit_topk": "lowbit_qsgd4", "lowbit_powersgd": "lowbit_qsgd4", "lowbit_ternary": "lowbit_qsgd4"}
# A speed run of a WARMUP configuration starts compressing after this many steps.
SPEED_FREEZE_STEP = "2"
# The GPT example's --lr_warmup default, and the automatic warm-up that follows from it
# (lowbit::optim::ResolveFreezeStep: the earlier of 10 steps past it and 10% of the run).
GPT_LR_WARMUP = 50


def freeze_step(a, label):
    """The warm-up steps of a WARMUP configuration: its --freeze_step, else the automatic one."""
    flags = CONFIGS[label][1]
    if "--freeze_step" in flags:
        return int(flags[flags.index("--freeze_step") + 1])
    # The same rule as the C++ one, rounding half away from zero as std::llround does.
    steps = quality_steps(a) if a.model == "gpt" else quality_steps(a) * (60000 // (64 * a.ranks))
    of_run = max(1, int(0.1 * steps + 0.5))
    return min(GPT_LR_WARMUP + 10, of_run) if a.model == "gpt" else of_run


RATES_MBIT = {"10gbit": 10000, "1gbit": 1000, "100mbit": 100}


def emit(row):
    print(json.dumps(row), flush=True)


def run(cmd, timeout, env=None):
    """(status, stdout+stderr); status is ok, failed (exit code) or timeout.

    On a timeout the whole process group gets SIGTERM (scripts/netsim then
    removes its namespaces and mpirun its daemons), and SIGKILL 10 s later.
    """
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                         errors="replace", start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return ("ok" if p.returncode == 0 else f"failed (exit {p.returncode})"), out
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, _ = p.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                out = ""
        return f"timeout ({timeout} s)", out or ""


def run_speed(cmd, timeout, csv_path):
    """A speed run, retried once when it wrote nothing: scripts/netsim's
    launch sometimes never starts the ranks (an ORTE daemon missing)."""
    status, log = run(cmd, timeout)
    if status != "ok" and not read_csv(csv_path):
        status2, log2 = run(cmd, timeout)
        return status2 + f" (retried after: {status})", log2
    return status, log


def tail(log, lines=6):
    return "\n".join(log.strip().splitlines()[-lines:])


def last_json(log, key):
    for line in reversed(log.splitlines()):
        start = line.find("{")
        if start >= 0 and key in line:
            try:
                return json.loads(line[start:])
            except ValueError:
                pass
    return None


def command(a, label, network, steps, eval_interval, csv_path, port):
    system, flags = CONFIGS[label]
    if steps != quality_steps(a) and label in WARMUP:  # a speed run: the compressed phase
        flags = [f for f in flags]
        if "--freeze_step" in flags:
            flags[flags.index("--freeze_step") + 1] = SPEED_FREEZE_STEP
        else:
            flags += ["--freeze_step", SPEED_FREEZE_STEP]
    if a.layout and "--two_level" in flags:
        # Hosts as blocks of R ranks: the same split on shared memory (the
        # quality pass) and under netsim (whose hosts hold ranks in blocks).
        flags = flags + ["--ranks_per_host", a.layout.split("x")[1]]
    if a.model == "gpt":
        common = ["--preset", a.preset, "--steps", str(steps), "--eval_interval", str(eval_interval),
                  "--val_windows", str(a.val_windows), "--seed", str(a.seed)]
        binary = [a.gpt, "--sample_chars", "0"]
    else:  # steps: epochs for the quality pass, 0 for a speed run (one epoch of --speed_examples)
        common = ["--seed", str(a.seed)] + (["--epochs", str(steps)] if steps else
                                            ["--epochs", "1", "--max_train_examples", str(a.speed_examples)])
        binary = [a.fashion]
    if system == "lowbit":
        prog = binary + ["--threads", "1", "--metrics_csv", csv_path] + common + flags
    else:
        addr, ifname = ("10.77.0.1", "eth0") if network != "shm" else ("127.0.0.1", "lo")
        prog = [a.python, PEERS[a.model], "--metrics_csv", csv_path, "--master_addr", addr, "--ifname", ifname,
                "--master_port", str(port)] + common + flags
    if network == "shm":
        return ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(a.ranks)] + prog
    if a.layout:  # hosts x ranks per host: only the links between hosts are shaped
        hosts, per_host = a.layout.split("x")
        return [os.path.join(ROOT, "scripts/netsim"), "--hosts", hosts, "--ranks-per-host", per_host, "--rate",
                network, "--"] + prog
    return [os.path.join(ROOT, "scripts/netsim"), "--ranks", str(a.ranks), "--rate", network, "--"] + prog


def quality_row(a, label, status, rows, wall_seconds):
    """A quality row: the steps to each target (the first evaluation at or past it) and the final value."""
    def steps_to(target):
        if a.model == "gpt":
            reached = [int(r["step"]) for r in rows if r.get("val_loss") and float(r["val_loss"]) <= target]
        else:
            per_epoch = 60000 // (64 * a.ranks)
            reached = [int(r["epoch"]) * per_epoch for r in rows if float(r["test_accuracy"]) >= target]
        return reached[0] if reached else None
    key = "val_loss" if a.model == "gpt" else "test_accuracy"
    final = float(rows[-1][key]) if rows and rows[-1].get(key) else None
    return {"bench": "peers", "pass": "quality", "model": a.model, "config": label, "status": status,
            "steps_to_target": steps_to(a.target), "final": final, "target": a.target,
            "steps_to": {str(t): steps_to(t) for t in a.targets}, "wall_seconds": wall_seconds}


def quality_steps(a):
    """The quality pass's length: steps (gpt) or epochs (fashion)."""
    return a.steps if a.model == "gpt" else a.epochs


def read_csv(path):
    try:
        with open(path) as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt", choices=["gpt", "fashion"])
    p.add_argument("--gpt", default=os.path.join(ROOT, "build/examples/gpt/gpt"))
    p.add_argument("--fashion", default=os.path.join(ROOT, "build/examples/fashion_mnist/fashion_mnist"))
    p.add_argument("--epochs", type=int, default=3, help="--model fashion: the quality pass's epochs")
    p.add_argument("--speed_examples", type=int, default=8192, help="--model fashion: examples of a speed run")
    p.add_argument("--python", default=PY,
                   help="the Python whose torch the peers run on (scripts/bench.sh --torch2: the wheel's)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=600, help="the quality pass's schedule")
    p.add_argument("--eval_interval", type=int, default=50)
    p.add_argument("--val_windows", type=int, default=512)
    p.add_argument("--target", type=str, default=None,
                   help="target validation loss (gpt, default 1.80 nats/char) or test accuracy (fashion, default 0.88)")
    p.add_argument("--speed_steps", type=int, default=60,
                   help="steps of a speed run (a multiple of the outer methods' --sync_every, so that their syncs count)")
    p.add_argument("--layout", default="", help="HxR: scripts/netsim with H hosts of R ranks (H x R = --ranks)")
    p.add_argument("--networks", default="shm,10gbit,1gbit,100mbit")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--timeout", type=int, default=900, help="seconds per quality run")
    p.add_argument("--speed_timeout", type=int, default=240, help="seconds per speed run")
    p.add_argument("--quality_from", default="", help="JSON lines of an earlier run: its quality rows are reused")
    p.add_argument("--quality_csv", default="",
                   help="CONFIG=PATH,...: quality rows from earlier runs' metrics CSVs (--metrics_csv of the example "
                        "or the peer, at the same --steps and seed; gpt only)")
    p.add_argument("--skip_quality", action="store_true", help="speed pass only (time to target left out)")
    p.add_argument("--port", type=int, default=29700, help="first rendezvous port of the PyTorch runs")
    p.add_argument("--work", default="", help="folder for the runs' CSVs (default: a temporary one)")
    a = p.parse_args()
    if a.target is None:
        a.target = "1.80" if a.model == "gpt" else "0.88"
    try:
        a.targets = [float(t) for t in a.target.split(",")]
    except ValueError:
        sys.exit(f"peers_bench: --target must be numbers separated by commas, got '{a.target}'")
    a.target = a.targets[0]
    if a.model == "fashion" and a.configs == ",".join(CONFIGS):
        # The 1-bit optimizers' rows are the GPT's; the hooks' (momentum exchange) rows stay.
        a.configs = ",".join(c for c in CONFIGS if c not in WARMUP or "--optimizer" not in CONFIGS[c][1])
    if a.layout:
        parts = a.layout.split("x")
        if len(parts) != 2 or not all(x.isdigit() and int(x) >= 1 for x in parts) or \
                int(parts[0]) * int(parts[1]) != a.ranks:
            sys.exit(f"peers_bench: --layout must be HxR with H x R = --ranks ({a.ranks}), got '{a.layout}'")
    labels = [c for c in a.configs.split(",") if c]
    for c in labels:
        if c not in CONFIGS:
            sys.exit(f"peers_bench: unknown config '{c}' (known: {', '.join(CONFIGS)})")
    networks = [n for n in a.networks.split(",") if n]
    for n in networks:
        if n != "shm" and n not in RATES_MBIT:
            sys.exit(f"peers_bench: --networks: unknown network '{n}' (shm, {', '.join(RATES_MBIT)})")
    try:
        torch_version = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"], check=True,
                                       capture_output=True, text=True, timeout=120).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        sys.exit(f"peers_bench: --python {a.python} cannot import torch: {e}")
    print(json.dumps({"peers": "pytorch", "python": a.python, "torch": torch_version}), flush=True)
    work = a.work or tempfile.mkdtemp(prefix="lowbit-peers.")
    os.makedirs(work, exist_ok=True)
    os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    port = a.port
    quality = {}
    if a.quality_from:  # an earlier run's quality rows (the speed pass alone is then repeated)
        with open(a.quality_from) as f:
            for line in f:
                start = line.find("{")
                row = json.loads(line[start:]) if start >= 0 else {}
                if row.get("pass") == "quality" and row.get("config") in labels:
                    quality[row["config"]] = row
                    emit(row)
    for item in [x for x in a.quality_csv.split(",") if x]:
        label, _, path = item.partition("=")
        if label not in labels or not path:
            sys.exit(f"peers_bench: --quality_csv wants CONFIG=PATH with CONFIG in --configs, got '{item}'")
        rows = read_csv(path)
        if a.model != "gpt" or not rows or int(rows[-1]["step"]) != a.steps:
            sys.exit(f"peers_bench: --quality_csv {path}: not a {a.steps}-step GPT metrics CSV")
        quality[label] = quality_row(a, label, "ok (from --quality_csv)", rows, None)
        quality[label]["metrics_csv"] = path
        emit(quality[label])
    if not a.skip_quality:
        for label in labels:
            if label in quality:
                continue
            port += 1
            path = os.path.join(work, f"quality-{label}.csv")
            t0 = time.time()
            status, log = run(command(a, label, "shm", quality_steps(a), a.eval_interval, path, port), a.timeout)
            q = quality_row(a, label, status, read_csv(path), round(time.time() - t0, 1))
            if status != "ok":
                q["log_tail"] = tail(log)
            quality[label] = q
            emit(q)
    speed = {}
    # The same tokens with no exchange (no network involved, so measured
    # once): one-rank lowbit processes side by side, as many as the ranks.
    procs = []
    for r in range(a.ranks):
        if a.model == "gpt":
            cmd = [a.gpt, "--preset", a.preset, "--steps", str(a.speed_steps), "--eval_interval",
                   str(a.speed_steps), "--val_windows", "64", "--sample_chars", "0", "--threads", "1",
                   "--seed", str(a.seed + r)]
        else:
            cmd = [a.fashion, "--epochs", "1", "--max_train_examples", str(a.speed_examples // a.ranks),
                   "--threads", "1", "--seed", str(a.seed + r)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=dict(os.environ, LOWBIT_BACKEND="local")))
    compute = []
    for pr in procs:
        try:
            out, _ = pr.communicate(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            pr.kill()
            out = ""
        j = last_json(out, '"example":"')
        if j and j.get("tokens_per_second"):
            compute.append(j["batch_size"] * j["block_size"] * j["world_size"] / j["tokens_per_second"])
        elif j and j.get("last_epoch_seconds_per_step"):
            compute.append(j["last_epoch_seconds_per_step"])
    compute_row = {"bench": "peers", "pass": "speed", "network": "none", "config": "compute_only",
                   "status": "ok" if len(compute) == a.ranks else "failed",
                   "step_seconds": max(compute) if len(compute) == a.ranks else None}
    emit(compute_row)
    for network in networks:
        speed[(network, "compute_only")] = compute_row
        for label in labels:
            port += 1
            path = os.path.join(work, f"speed-{network}-{label}.csv")
            speed_steps = a.speed_steps if a.model == "gpt" else 0
            status, log = run_speed(command(a, label, network, speed_steps, a.speed_steps, path, port),
                                    a.speed_timeout, path)
            rows = read_csv(path)
            done = (int(rows[-1]["step"]) if a.model == "gpt" else a.speed_examples // (64 * a.ranks)) if rows else 0
            ok = status.startswith("ok")
            step_seconds = float(rows[-1]["train_seconds"]) / done if rows and done and ok else None
            row = {"bench": "peers", "pass": "speed", "network": network, "config": label, "status": status,
                   "step_seconds": step_seconds}
            j = last_json(log, '"parameters"')
            if j and network in RATES_MBIT and label.endswith("_allreduce"):
                # A ring allreduce sends and receives 2 (P - 1) / P of the fp32 gradient per rank.
                wire = j["parameters"] * 4 * 8 * 2 * (a.ranks - 1) / a.ranks / (RATES_MBIT[network] * 1e6)
                row["wire_bound_s"] = wire
                if step_seconds:
                    row["step_over_bound"] = step_seconds / max(wire, compute_row["step_seconds"] or 0)
            q = quality.get(label)
            if step_seconds and q:
                row["time_to"] = {}
                for t in a.targets:
                    steps_needed = q.get("steps_to", {}).get(str(t), q["steps_to_target"] if t == a.target else None)
                    if not steps_needed:
                        continue
                    time_s = steps_needed * step_seconds
                    if label in WARMUP:
                        warm, warm_label = freeze_step(a, label), WARMUP[label]
                        warm_row = speed.get((network, warm_label), {})
                        # None: its warm-up's step time is missing
                        time_s = (min(warm, steps_needed) * warm_row["step_seconds"] +
                                  max(0, steps_needed - warm) * step_seconds) if warm_row.get("step_seconds") else None
                    row["time_to"][str(t)] = time_s
                row["time_to_target_s"] = row["time_to"].get(str(a.target))
            if not ok:
                row["log_tail"] = tail(log)
            speed[(network, label)] = row
            emit(row)
    summarize(a, networks, labels, quality, speed)


def summarize(a, networks, labels, quality, speed):
    """Ratios against PyTorch DDP on the same network, and a Markdown table per target."""
    for target in a.targets:
        key = str(target)
        print(f"\n| network | config | step s | vs compute-only | steps to {target} | time to {target} s | "
              f"PyTorch allreduce / this | best PyTorch hook / this | "
              f"final {'val loss' if a.model == 'gpt' else 'accuracy'} |")
        print("|---|---|---|---|---|---|---|---|---|")
        for network in networks:
            compute = speed[(network, "compute_only")]["step_seconds"]

            def ttt(label):
                r = speed.get((network, label), {})
                return r.get("time_to", {}).get(key, r.get("time_to_target_s") if target == a.target else None)
            py_base = ttt("pytorch_allreduce")
            py_hooks = [t for t in (ttt("pytorch_fp16"), ttt("pytorch_powersgd")) if t]
            py_best = min(py_hooks) if py_hooks else None
            print(f"| {network} | compute_only | {fmt(compute)} | 1 | | | | | |")
            for label in labels:
                r = speed[(network, label)]
                q = quality.get(label)
                t = ttt(label)
                s = r.get("step_seconds")
                if q is None:
                    reached = "no quality run"
                else:
                    reached = q.get("steps_to", {}).get(key, q.get("steps_to_target") if target == a.target else None)
                cells = [network, label if r["status"] == "ok" else f"{label} ({r['status']})", fmt(s),
                         fmt(s / compute if s and compute else None), reached or "not reached",
                         fmt(t), fmt(py_base / t if py_base and t else None),
                         fmt(py_best / t if py_best and t else None),
                         fmt_final((q or {}).get("final", (q or {}).get("final_val_loss")))]
                print("| " + " | ".join(str(c) for c in cells) + " |")
                if t:
                    emit({"bench": "peers", "pass": "ratio", "network": network, "config": label, "target": target,
                          "time_to_target_s": t, "pytorch_allreduce_over_this": py_base / t if py_base else None,
                          "best_pytorch_hook_over_this": py_best / t if py_best else None,
                          "step_over_compute_only": s / compute if s and compute else None})


def fmt_final(x):
    return "—" if x is None else f"{x:.4f}"


def fmt(x):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}" if x < 100 else f"{x:.0f}"
    return str(x)


if __name__ == "__main__":
    main()
