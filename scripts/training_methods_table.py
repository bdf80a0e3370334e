#!/usr/bin/env python3
"""Markdown tables of scripts/training_methods.sh's results (docs/training_methods.md).

Usage: training_methods_table.py DIR, where DIR holds gpt_spam.jsonl,
gpt_qat.jsonl, gpt_dkm.jsonl, fashion.jsonl, compeft.log and dkm_memory.jsonl
(missing files leave their rows out).
"""
import json
import os
import re
import sys


def rows(path):
    """label -> the first seed's row, with every numeric field averaged over the label's seeds and
    `seeds` (how many) and `spread` (max - min of val_loss or test_accuracy) added."""
    runs = {}
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                runs.setdefault(d["label"], []).append(d)
    out = {}
    for label, ds in runs.items():
        row = dict(ds[0])
        for key, value in ds[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                vals = [d[key] for d in ds if isinstance(d.get(key), (int, float))]
                row[key] = sum(vals) / len(vals)
        row["seeds"] = len(ds)
        metric = "val_loss" if "val_loss" in ds[0] else "test_accuracy"
        vals = [d[metric] for d in ds]
        row["spread"] = max(vals) - min(vals)
        out[label] = row
    return out


def fmt(v, digits=4):
    return "-" if v is None else f"{v:.{digits}f}"


def main(d):
    gpt = {}
    for name in ("gpt_spam", "gpt_qat", "gpt_ofq2", "gpt_dkm", "gpt_qkr", "gpt_extra"):
        gpt.update(rows(os.path.join(d, name + ".jsonl")))
    fm = rows(os.path.join(d, "fashion.jsonl"))
    loss = lambda label: gpt.get(label, {}).get("val_loss")
    acc = lambda label: fm.get(label, {}).get("test_accuracy")

    def loss_cell(label):
        g = gpt.get(label)
        if not g:
            return "-"
        if g["seeds"] > 1:
            return f"{g['val_loss']:.4f} (mean of {g['seeds']} seeds, spread {g['spread']:.4f})"
        return f"{g['val_loss']:.4f}"

    print("### SPAM and Stable-SPAM against AdamW\n")
    print("| optimizer | lr | GPT val loss (fp32) | GPT val loss (W4A4) | Fashion acc. (fp32) | Fashion acc. (W4A4) |")
    print("|---|---|---|---|---|---|")
    for lr in ("1e-3", "3e-3", "1e-2"):
        for opt in ("AdamW", "SPAM", "Stable-SPAM", "Stable-SPAM 8-bit"):
            label = f"{opt} {lr}"
            w4 = f"W4A4 {label}"
            if not any(x in gpt or x in fm for x in (label, w4)):
                continue
            print(f"| {opt} | {lr} | {loss_cell(label)} | {loss_cell(w4)} | {fmt(acc(label))} | {fmt(acc(w4))} |")

    def qat_table(title, labels):
        print(f"\n### {title}\n")
        print("| method | GPT val loss | weight flips/step | frozen | Fashion acc. | flips/step | frozen |")
        print("|---|---|---|---|---|---|---|")
        for label in labels:
            g, f = gpt.get(label, {}), fm.get(label, {})
            if not g and not f:
                continue
            print(f"| {label} | {fmt(g.get('val_loss'))} | {fmt(g.get('weight_flip_fraction'), 5)} | "
                  f"{fmt(g.get('frozen_weight_fraction'), 5)} | {fmt(f.get('test_accuracy'))} | "
                  f"{fmt(f.get('weight_flip_fraction'), 5)} | {fmt(f.get('frozen_weight_fraction'), 5)} |")

    # The GPT's default optimizer is AdamW at 1e-3: its W4A4 LSQ row is the SPAM table's.
    if "W4A4 LSQ" not in gpt and "W4A4 AdamW 1e-3" in gpt:
        gpt["W4A4 LSQ"] = gpt["W4A4 AdamW 1e-3"]
    qat_table("OFQ against LSQ", ["W4A4 LSQ", "W4A4 OFQ", "W4A4 OFQ, freezing from step 1",
                                  "W4A4 OFQ+QKR", "W2A2 LSQ", "W2A2 OFQ", "W2A2 OFQ, freezing from step 1",
                                  "W2A2 OFQ+QKR"])
    qat_table("Tequila against plain ternary", ["ternary STE", "ternary Tequila", "ternary Tequila lambda 0.05",
                                                "ternary Tequila lambda 0.5"])
    qat_table("DKM against uniform LSQ (weights only, from scratch)",
              ["W4 LSQ", "DKM 4-bit", "DKM 4-bit tau 0.3", "W3 LSQ", "DKM 3-bit", "W2 LSQ", "DKM 2-bit"])
    qat_table("DKM against uniform LSQ, fine-tuning the trained fp32 model (GPT 200 steps, Fashion 1 epoch)",
              ["W4 QAT fine-tune", "W4 DKM fine-tune", "W2 QAT fine-tune", "W2 DKM fine-tune"])

    print("\n### E2E-QP: step sizes only, from a trained model\n")
    base_loss = loss("fp32 base")
    base_acc = acc("fp32 Adam (base)")
    print(f"fp32 base: GPT val loss {fmt(base_loss)} (the same fp32 model trained 200 steps more: "
          f"{fmt(loss('fp32 continued 200 steps'))}), Fashion accuracy {fmt(base_acc)}.\n")
    print("| bits | GPT: quantized, untrained | E2E-QP | gap closed | QAT fine-tune (all weights) | trainable E2E / all | "
          "Fashion: untrained | E2E-QP | gap closed | QAT fine-tune |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b in (4, 2):
        g = gpt.get(f"W{b} E2E-QP", {})
        ft = gpt.get(f"W{b} QAT fine-tune", {})
        f = fm.get(f"W{b} E2E-QP", {})
        fft = fm.get(f"W{b} QAT fine-tune", {})
        ptq, e2e = g.get("init_val_loss"), g.get("val_loss")
        closed = (ptq - e2e) / (ptq - base_loss) if None not in (ptq, e2e, base_loss) and ptq != base_loss else None
        ratio = (f"{int(g['trainable_parameters']):,} / {int(g['parameters']):,}" if g else "-")
        fptq, fe2e = f.get("init_test_accuracy"), f.get("test_accuracy")
        fclosed = ((fe2e - fptq) / (base_acc - fptq) if None not in (fptq, fe2e, base_acc) and base_acc != fptq
                   else None)
        print(f"| W{b} | {fmt(ptq)} | {fmt(e2e)} | {fmt(None if closed is None else 100 * closed, 1)}% | "
              f"{fmt(ft.get('val_loss'))} | {ratio} | {fmt(fptq)} | {fmt(fe2e)} | "
              f"{fmt(None if fclosed is None else 100 * fclosed, 1)}% | {fmt(fft.get('test_accuracy'))} |")

    logs = sorted(f for f in os.listdir(d) if f.startswith("compeft") and f.endswith(".log"))
    results, head = {}, None
    for name in logs:
        for l in open(os.path.join(d, name)):
            if l.startswith('{"example"'):
                r = json.loads(l)
                head = head or r
                for c in r.get("compeft", []):
                    results[(c["density"], c["alpha"])] = c
    if head and results:
        base, tuned = head["init_val_loss"], head["val_loss"]
        print("\n### ComPEFT: the Bible -> fortunes task vector\n")
        print(f"Base (Bible) on the fortunes validation text: {fmt(base)}; fine-tuned: {fmt(tuned)}; "
              f"the fp32 task vector: {head['task_vector_fp32_bytes']:,} bytes.\n")
        print("| density | file bytes | vs fp32 | best alpha | val loss with the delta applied | of the fine-tuning's gain |")
        print("|---|---|---|---|---|---|")
        for density in sorted({k[0] for k in results}):
            best = min((c for k, c in results.items() if k[0] == density), key=lambda c: c["val_loss"])
            gain = (base - best["val_loss"]) / (base - tuned)
            print(f"| {density:g} | {best['bytes']:,} | {head['task_vector_fp32_bytes'] / best['bytes']:.0f}x smaller | "
                  f"{best['alpha']:g} | {fmt(best['val_loss'])} | {100 * gain:.0f}% |")
        print("\nEvery alpha tried (validation loss):\n")
        alphas = sorted({k[1] for k in results})
        print("| density | " + " | ".join(f"alpha {a:g}" for a in alphas) + " |")
        print("|---|" + "---|" * len(alphas))
        for density in sorted({k[0] for k in results}):
            cells = [fmt(results[(density, a)]["val_loss"], 3) if (density, a) in results else "-" for a in alphas]
            print(f"| {density:g} | " + " | ".join(cells) + " |")

    hooks = [l for l in ("compeft 5% (EF)", "DiLoCo H=50 compeft 5%") if l in gpt]
    if hooks:
        print("\n### ComPEFT as the exchange (GPT, 4 ranks)\n")
        print(f"Against fp32 AdamW with uncompressed DDP: {fmt(loss('AdamW 1e-3'))}, "
              f"{gpt.get('AdamW 1e-3', {}).get('bytes_sent_per_step', 0):,.0f} bytes sent per step and rank.\n")
        print("| exchange | val loss | bytes sent per step and rank | fewer than fp32 DDP |")
        print("|---|---|---|---|")
        dense = gpt.get("AdamW 1e-3", {}).get("bytes_sent_per_step")
        for label in hooks:
            g = gpt[label]
            ratio = f"{dense / g['bytes_sent_per_step']:.0f}x" if dense and g["bytes_sent_per_step"] else "-"
            print(f"| {label} | {fmt(g['val_loss'])} | {g['bytes_sent_per_step']:,.0f} | {ratio} |")

    mem = os.path.join(d, "dkm_memory.jsonl")
    if os.path.exists(mem):
        print("\n### DKM's attention maps on the GPT small shapes (one forward, all iterations)\n")
        print("| shape | bits | DKM bytes | eDKM bytes | smaller | DKM s | eDKM s |")
        print("|---|---|---|---|---|---|---|")
        m = {}
        for l in open(mem):
            r = json.loads(l)
            m[(r["shape"], r["bits"], r["unique"])] = r
        for (shape, bits, unique), r in m.items():
            if unique:
                continue
            u = m.get((shape, bits, True))
            if u:
                print(f"| {shape} | {bits} | {r['attention_bytes']:,} | {u['attention_bytes']:,} | "
                      f"{r['attention_bytes'] / u['attention_bytes']:.1f}x | {r['seconds']:.3f} | {u['seconds']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/training_methods")
