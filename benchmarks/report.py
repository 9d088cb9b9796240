"""Turns benchmarks/results/*.jsonl into docs/benchmarks.md and one accuracy-vs-bits PNG per suite.

    python benchmarks/report.py
"""
import collections
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import figures, float_starts  # noqa: E402
METHOD_DESCRIPTIONS = {
    "float": "the float model every run starts from (float32 TFLite)",
    "float-finetuned": "the float model trained the same epochs on the same schedule as the QAT "
                       "rows; where it ran, `drop` is measured against it",
    "kquant-dorefa": "kquant, DoReFa weights + clipped [0, 1] activations",
    "kquant-pact": "kquant, DoReFa weights + PACT activations (learnable clip, starting at 6)",
    "kquant-pact-calibrated": "kquant-pact with clips and 8-bit ranges started from the float "
                              "model's activations (`kquant.calibrate_ranges`)",
    "pact-calibrated-folded": "kquant-pact-calibrated with batch norm folded into the conv while "
                              "training (`Recipe(fold_batch_norm=True)`), statistics frozen "
                              "after half the steps (per-layer DoReFa: refused since, its "
                              "moving variance drifts)",
    "pact-calibrated-per-channel": "kquant-pact-calibrated with DoReFa's weight statistics per "
                                   "output channel",
    "pact-calibrated-per-channel-folded": "pact-calibrated-per-channel with batch norm folded "
                                          "in, statistics frozen after half the steps",
    "lsq": "kquant, LSQ learned steps for weights (per channel) and activations, started from "
           "the float model with the paper's 2 mean|v| / sqrt(Q_P)",
    "lsq-plus": "kquant, LSQ weights (per channel) and LSQ+ activations (learned step and "
                "offset in place of the ReLU, MSE start from the float model)",
    "direct-levels": "kquant, learnable weight levels per output channel with direct code "
                     "updates (`weight_quantizer=\"direct-levels\"`) + PACT activations, calibrated",
    "channel-aware": "kquant, DoReFa weights + channel-aware activation clips (mean per-channel "
                     "error, EMA), calibrated",
    "direct-levels+channel-aware": "both of the above",
    "two-stage": "kquant-pact-calibrated, weights quantized first, then activations "
                 "(`TwoStageQuantization`); from 2e23ed0 the quantized stage gets 3/4 of the "
                 "epochs with a restarted cosine and re-fit clips, before it half the epochs on "
                 "one cosine",
    "progressive-bits": "kquant-pact-calibrated, decreasing bit-widths (`ProgressiveBitWidth`); "
                        "from 2e23ed0 8 -> 4 -> 2 with half the epochs at the final bits, a "
                        "restarted cosine and re-fit clips at every stage, before it 32 -> 8 -> 4 "
                        "-> 2 in equal stages on one cosine",
    "stochastic-precision": "kquant-pact-calibrated, residual blocks quantized with probability "
                            "ramping 0.25 -> 1 (`StochasticPrecision`)",
    "joint-distillation": "kquant-pact-calibrated, 2-bit and 4-bit students with one float "
                          "teacher (`JointDistillation`); each row reports its student; from "
                          "b6a76f0 the teacher learns at 0.2x the students' rate, as released",
    "joint-distillation+direct-levels+channel-aware": "joint distillation with "
                                                      "direct-levels+channel-aware students",
    "ctmq-chain": "kquant-pact-calibrated, CTMQ's chain of bit-widths from one step above the "
                  "target, 1 epoch per step, the rest at the target (`MultiStepChain`); at 1 bit "
                  "`kquant-pact-calibrated` is the direct-training baseline",
    "ctmq-cyclic": "the chain, then one cycle of the full-precision twin and the low-bit model, 1 "
                   "epoch each, the rest at the target (`CyclicMultiStep`)",
    "auxiliary-module": "kquant-pact-calibrated trained with a full-precision auxiliary path "
                        "at every residual block, dropped for export (`AuxiliaryModule`)",
    "ternary-pact-calibrated": "plain QAT with ternary weights (TWN, per channel) and PACT "
                               "activations, calibrated: TSQ's plain baseline",
    "tsq-step1": "TSQ's code learning alone: sparse 2-bit activation codes, 8-bit weights",
    "tsq": "TSQ: code learning for every epoch, then ternary weights solved layer by layer "
           "(`TwoStepQuantization`)",
    "tsq+finetune": "TSQ with the last quarter of the epochs fine-tuning the ternary network",
    "tfmot-8bit": "TF-MOT's default 8-bit QAT (W8A8 only)",
    "tfmot-nbit": "TF-MOT's experimental n-bit scheme (`DefaultNBitQuantizeScheme`), which "
                  "quantizes every layer and the input image (at the activation bits)",
    "qkeras": "QKeras as its documentation recommends: quantized_bits weights with "
              "alpha=\"auto_po2\", quantized_relu activations with AutoQKeras's integer bits "
              "(before 2026-11-26: alpha=1 and a [0, 1) relu, which rounded most weights to 0)",
    "larq": "Larq as its documentation recommends: DoReFa weights (weight_clip) and activations, "
            "at W1A1 a binarized network (ste_sign inputs and kernels); first conv, last dense "
            "float",
    "mct-qat": "Sony's model-compression-toolkit QAT",
}


def method_descriptions(names):
    """The described methods, then each other method of `names`: a technique joined with '+' to
    a quantizer method (benchmarks.methods.method's rule), described by its two parts."""
    described = dict(METHOD_DESCRIPTIONS)
    for name in sorted(set(names) - set(described)):
        parts = name.split("+")
        split = next((i for i in range(1, len(parts)) if "+".join(parts[i:]) in described), None)
        if split is not None:
            described[name] = (f"`{'+'.join(parts[:split])}`'s training on the "
                               f"`{'+'.join(parts[split:])}` model in place of "
                               "kquant-pact-calibrated")
    return described


PEERS = ("tfmot-8bit", "tfmot-nbit", "qkeras", "larq", "mct-qat")
COLUMNS = ["method", "weight_bits", "activation_bits", "epochs", "seed", "keras_top1", "tflite_top1",
           "drop", "agreement", "train_throughput_ratio", "tflite_bytes", "size_ratio",
           "latency_ratio_1thread", "latency_ratio_2threads"]


STEP_TIME_FILE = "step-time.jsonl"  # written by benchmarks/step_time.py
# A suite whose steps are another's: the same model, batch and data, schedules whose stages
# take the same fractions of the epochs; only the number of epochs differs.
STEP_TIMES_FROM = {"cifar10-resnet20-long": "cifar10-resnet20"}
STORAGE_FILE = "weight-storage.jsonl"  # written by benchmarks/weight_storage.py


def load(results_dir, only=None):
    """Records by suite: accuracy runs, or those of one measurement file (`only`:
    `STEP_TIME_FILE`, `STORAGE_FILE`).

    Records marked "superseded" (kept in the files with the reason) are left out.
    """
    records = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
        name = os.path.basename(path)
        if name != only and (only or name in (STEP_TIME_FILE, STORAGE_FILE)):
            continue
        with open(path) as f:
            for line in filter(str.strip, f):
                record = json.loads(line)
                if not record.get("superseded"):
                    records[record["suite"]].append(record)
    return records


FINETUNED = "float-finetuned"


def mark_finetuned_reference(rows):
    """Gives each row of a suite with a fine-tuned float row (the float model trained the same
    epochs, `float-finetuned`) that row's top-1 as "finetuned_top1": the long protocol measures
    drop against a float model that got the same extra training. Over several seeds it is the
    fine-tuned rows' mean, as the rows held against it are compared by their mean."""
    finetuned = collections.defaultdict(list)
    for r in rows:
        if r["method"] == FINETUNED:
            finetuned[r["epochs"]].append(r)
    for r in rows:
        if r["epochs"] in finetuned:
            r["finetuned_top1"] = _mean_top1(finetuned[r["epochs"]])


def reference_top1(record):
    """The float top-1 a row's drop is measured against: the fine-tuned float model's where one
    ran the same epochs, else the starting checkpoint's."""
    return record.get("finetuned_top1", record["float_top1"])


def _cell(record, column):
    if record.get("keras_top1") is None:  # a peer that could not run here (see the notes)
        return "not run" if column == "keras_top1" else "-"
    if column == "drop":
        value = reference_top1(record) - record["keras_top1"]
        return f"{100 * value:+.2f}"
    if column == "size_ratio":
        return (f"{record['float_tflite_bytes'] / record['tflite_bytes']:.2f}x"
                if record.get("tflite_bytes") else "")
    value = record.get(column)
    if value is None:
        return "no integer export" if column == "tflite_top1" else "-"
    if isinstance(value, float):
        return f"{value:.4f}" if "top1" in column or column == "agreement" else f"{value:.3f}"
    return str(value)


def protocol(rows):
    """The suite's training protocol, as its rows record it: QAT epochs and weight decay."""
    trained = [r for r in rows if r["method"] != "float"]
    epochs = ", ".join(str(e) for e in sorted({r["epochs"] for r in trained}))
    decays = sorted({r.get("weight_decay") or 0.0 for r in trained})
    decay = ("none" if decays == [0.0] else ", ".join(f"{d:g}" for d in decays) +
             " (SGD's decoupled decay, not on quantizer variables)")
    return f"Training from the float model: {epochs} epochs; weight decay {decay}."


def allowed_drops(record):
    """{weight bits: the largest drop in points the benchmark issues allow}: tighter at 4 bits
    against a float model fine-tuned the same epochs (the long protocol, issue 17)."""
    return {4: 0.5, 2: 3.0} if "finetuned_top1" in record else {4: 1.0, 2: 3.0}


def goals_heading(rows):
    """The sentence before a suite's `goals`, with the drops allowed in that suite."""
    finetuned = next((r for r in rows if "finetuned_top1" in r), None)
    allowed = allowed_drops(finetuned or {})
    return (f"Against the goals (W4A4 within {allowed[4]:g} point of "
            f"{'the fine-tuned ' if finetuned else ''}float, W2A2 within {allowed[2]:g}, at "
            "least as accurate as every peer, throughput >= 0.75x float, TFLite >= 3.9x smaller "
            "and faster than float):")


def goals(rows):
    """Lines saying, for each kquant row, whether it meets the goals of the benchmark issue."""
    peers = {(r["method"], r["weight_bits"], r["activation_bits"]): r["keras_top1"] for r in rows
             if r["method"] in PEERS}
    lines = []
    for r in rows:
        if r["method"] in ("float", FINETUNED) or r["method"] in PEERS:
            continue
        bits, drop = r["weight_bits"], 100 * (reference_top1(r) - r["keras_top1"])
        allowed = allowed_drops(r).get(bits)
        checks = []
        if allowed is not None:
            checks.append(f"drop {drop:.2f} <= {allowed:g}: {'yes' if drop <= allowed else 'NO'}")
        for peer in PEERS:
            peer_top1 = peers.get((peer, bits, r["activation_bits"]))
            if peer_top1 is not None:
                ok = r["keras_top1"] >= peer_top1
                checks.append(f">= {peer} ({100 * peer_top1:.2f}): {'yes' if ok else 'NO'}")
        ratio = r["train_throughput_ratio"]
        if ratio is not None:  # None: a run too short to time
            checks.append(f"throughput {ratio:.2f} >= 0.75: {'yes' if ratio >= 0.75 else 'NO'}")
        if r.get("tflite_bytes"):
            size = r["float_tflite_bytes"] / r["tflite_bytes"]
            checks.append(f"size {size:.2f}x >= 3.9x: {'yes' if size >= 3.9 else 'NO'}")
            faster = r["latency_ratio_1thread"] < 1 and r["latency_ratio_2threads"] < 1
            checks.append(f"faster than float TFLite: {'yes' if faster else 'NO'}")
        lines.append(f"- `{r['method']}` W{bits}A{r['activation_bits']}: " + "; ".join(checks))
    return lines


RUNTIMES = ("xnnpack", "builtin", "micro")
DEPLOYMENT_COLUMNS = ["method", "bits", "seed", "agreement"] + [
    f"exact {runtime}" for runtime in RUNTIMES] + [
    "worst layer: values differing", "max steps", "XNNPACK partitions", "Micro arena bytes"]


def _images(row, runtime):
    """ " (on N images)" where a runtime's exact check took fewer test images than the rest."""
    examples = row.get("exact_examples")
    return f" (on {examples:,} images)" if runtime != "xnnpack" and examples and \
        examples < 10_000 else ""


def deployment(rows):
    """Table rows of the deployed model against kquant (rows with the integer-exact fields),
    each with its verdict on the targets: int8 outputs identical to the integer-exact mode on
    >= 99.9% of images on every runtime, one XNNPACK partition, and the float path (`agreement`,
    what `model.evaluate` says against the device) >= 99% at 4 bits and >= 97% at 2 bits."""
    lines = []
    for r in rows:
        if r.get("agreement_exact_xnnpack") is None:
            continue
        exact = [r.get(f"agreement_exact_{runtime}") for runtime in RUNTIMES]
        float_target = {4: 0.99, 2: 0.97}.get(r["weight_bits"])
        verdicts = ["exact >= 99.9%: " + ("yes" if all(e is not None and e >= 0.999 for e in exact)
                                          else "NO")]
        if r.get("xnnpack_partitions") is not None:
            verdicts.append("one partition: " + ("yes" if r["xnnpack_partitions"] == 1 else "NO"))
        if float_target:
            verdicts.append(f"float path >= {100 * float_target:g}%: "
                            + ("yes" if r["agreement"] >= float_target else "NO"))
        cells = [r["method"], f"W{r['weight_bits']}A{r['activation_bits']}", r["seed"],
                 f"{r['agreement']:.4f}"] + ["-" if e is None else f"{e:.4f}" + _images(r, runtime)
                                         for e, runtime in zip(exact, RUNTIMES)] + [
            f"{r['layer_max_differing']:.4f}", r["layer_max_steps"],
            r.get("xnnpack_partitions", "-"), r.get("micro_arena_bytes", "-")]
        lines.append("| " + " | ".join(map(str, cells)) + " | " + "; ".join(verdicts) + " |")
    return lines


STORAGE_GOALS = {("resnet20", 4): 6.0, ("resnet20", 2): 7.0}  # size against float TFLite


def weight_storage(rows):
    """Table rows of `benchmarks/weight_storage.py`'s records: size, outputs and latency of
    each weight storage, with the size goals (ResNet-20 W4A4 >= 6x, W2A2 >= 7x smaller)."""
    lines = []
    for r in rows:
        head = f"| {r['method']} | W{r['weight_bits']}A{r['activation_bits']} | {r['weight_storage']} |"
        if r.get("unavailable"):
            lines.append(head + f" not stored: {r['unavailable']} |" + " |" * 8)
            continue
        goal = STORAGE_GOALS.get((r["model"], r["weight_bits"]))
        verdict = "" if goal is None or r["weight_storage"] == "int8" else \
            f" (goal {goal:g}x: {'yes' if r['size_ratio'] >= goal else 'NO'})"
        stored = ", ".join(f"{n} {kind}" for kind, n in sorted(r["layers_stored"].items()))
        latency = [f"{r[f'latency_ms_{p}']:.3f} ms ({r[f'latency_vs_int8_{p}']:.2f}x int8, "
                   f"{r[f'latency_vs_float_{p}']:.2f}x float)" for p in ("xnnpack", "builtin")]
        same = " / ".join(f"{r[f'outputs_identical_to_int8_{p}']:.4f}, "
                          f"{r[f'top1_agreement_with_int8_{p}']:.4f}" for p in ("xnnpack", "builtin"))
        lines.append(head + f" {stored} | {r['tflite_bytes']} | {r['size_ratio']:.2f}x{verdict} | "
                     f"{r['tflite_top1']:.4f} | {same} | {r['agreement_exact_xnnpack']:.4f} | "
                     f"{latency[0]} | {latency[1]} | {r['xnnpack_partitions']} |")
    return lines


def plot_weight_storage(suite, rows, path):
    """Bars: each stored model's size and XNNPACK / built-in latency against float TFLite."""
    rows = [r for r in rows if not r.get("unavailable")]
    labels = [f"{r['method']}\nW{r['weight_bits']} {r['weight_storage']}" for r in rows]
    with figures.figure(path, 1, 2, figsize=(11, 4)) as (plt, fig, axes):
        axes[0].bar(labels, [r["size_ratio"] for r in rows], color="tab:blue")
        axes[0].set_ylabel("float TFLite bytes / bytes")
        width = 0.4
        for i, (runtime, color) in enumerate((("xnnpack", "tab:orange"), ("builtin", "tab:green"))):
            axes[1].bar([x + (i - 0.5) * width for x in range(len(rows))],
                        [r[f"latency_vs_float_{runtime}"] for r in rows], width, color=color,
                        label=runtime)
        axes[1].axhline(1.0, color="gray", linestyle="--")
        axes[1].set_xticks(range(len(rows)), labels)
        axes[1].set_ylabel("batch-1 latency / float TFLite's")
        axes[1].legend(fontsize=8)
        for ax in axes:
            ax.tick_params(axis="x", labelsize=6, rotation=60)
        fig.suptitle(f"{suite}: weight storage")


PLAIN_QAT = "kquant-pact-calibrated"  # the step-time reference
# Plain QAT rows (no technique): a technique is held against the strongest of them at its bits.
PLAIN_ROWS = (PLAIN_QAT, "pact-calibrated-per-channel")
NOT_BUILT_ON_PLAIN_QAT = ("float", FINETUNED, "kquant-dorefa", "kquant-pact", PLAIN_QAT) + PEERS


def seed_groups(rows):
    """{(method, weight bits, activation bits): [rows]}, one list per method and bit-widths
    over its seeds, in the order the rows come."""
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["method"], r["weight_bits"], r["activation_bits"])].append(r)
    return groups


def _mean_top1(group):
    return sum(r["keras_top1"] for r in group) / len(group)


def _over_seeds(group):
    """ " (mean of n seeds, spread s)" for several seeds, else nothing."""
    if len(group) == 1:
        return ""
    return f" (mean of {len(group)} seeds, spread {_spread(group):.2f})"


def _spread(group):
    """Points between the best and worst seed of one method's rows."""
    top1 = [r["keras_top1"] for r in group]
    return 100 * (max(top1) - min(top1))


def seed_spread(groups, bits):
    """The largest spread in points between seeds of one method at `bits` ([weight,
    activation]), or None if no method ran there with several seeds."""
    return max((_spread(group) for (_, *b), group in groups.items()
                if b == list(bits) and len(group) > 1), default=None)


def _verdict(gain, noise):
    """Whether `gain` points beat the reference, unless `noise` (a seed spread) covers it."""
    if noise is not None and abs(gain) <= noise:
        return f"within seed noise ({noise:.2f})"
    return "yes" if gain > 0 else "NO"


def strongest_plain(groups, bits, besides=None):
    """(method, rows) of the plain QAT row (`PLAIN_ROWS`, not `besides`) with the highest mean
    top-1 at `bits` ([weight, activation]), or (None, None) if none ran there."""
    found = [(name, groups[(name, *bits)]) for name in PLAIN_ROWS
             if name != besides and (name, *bits) in groups]
    return max(found, key=lambda item: _mean_top1(item[1]), default=(None, None))


def against_plain_qat(rows, timed):
    """Lines comparing each technique or new quantizer with the strongest plain QAT row at the
    same bits (per-layer or per-channel weights, whichever scored higher).

    The papers' claim is that each improves on plain quantization-aware training. Where a
    method ran with several seeds, its mean is compared (with the spread); a difference no
    larger than the largest seed spread of any method at the same bits is called seed noise,
    and where none ran there with several seeds, one seed's sign decides. The step-time cost
    comes from `benchmarks/step_time.py` (`timed`), where the methods share one process.
    """
    groups = seed_groups(rows)
    step_time = {(t["method"], t["weight_bits"], t.get("activation_bits", t["weight_bits"])):
                 t["step_time_vs_plain_qat"] for t in timed}
    lines = []
    for (method, *bits), group in groups.items():
        name, base = strongest_plain(groups, bits, besides=method)
        if method in NOT_BUILT_ON_PLAIN_QAT or base is None:
            continue
        gain = 100 * (_mean_top1(group) - _mean_top1(base))
        verdict = _verdict(gain, seed_spread(groups, bits))
        cost = step_time.get((method, *bits))
        parts = [f"`{p}` {100 * (_mean_top1(group) - _mean_top1(groups[(p, *bits)])):+.2f}"
                 for p in _largest_parts(method, bits, groups)]
        lines.append(f"- `{method}` W{bits[0]}A{bits[1]}: {gain:+.2f} points"
                     f"{_over_seeds(group)} against plain QAT (`{name}` {100 * _mean_top1(base):.2f}"
                     f"{_over_seeds(base)}): beats it: {verdict}; step time "
                     + (f"{cost:.2f}x plain QAT's" if cost else "not measured")
                     + (f"; against its parts: {', '.join(parts)}" if parts else ""))
    return lines


def best_at_each_bit_width(rows, timed):
    """Table rows: at each bit-width, the best kquant method and the best peer by top-1 (mean
    over seeds), each with its drop from float and its cost: training throughput against
    float (every row measures it) and, for kquant, step time against plain QAT where
    `benchmarks/step_time.py` measured it."""
    step_time = {(t["method"], t["weight_bits"], t.get("activation_bits", t["weight_bits"])):
                 t["step_time_vs_plain_qat"] for t in timed}
    best = collections.defaultdict(dict)
    for (method, *bits), group in seed_groups(rows).items():
        if method in ("float", FINETUNED):
            continue
        side = "peer" if method in PEERS else "kquant"
        if side not in best[tuple(bits)] or _mean_top1(group) > _mean_top1(best[tuple(bits)][side]):
            best[tuple(bits)][side] = group

    def cells(group, with_step_time):
        if group is None:
            return ["-"] * (5 if with_step_time else 4)
        method, bits = group[0]["method"], (group[0]["weight_bits"], group[0]["activation_bits"])
        timed = [r["train_throughput_ratio"] for r in group if r["train_throughput_ratio"]]
        found = [f"`{method}`", f"{100 * _mean_top1(group):.2f}",
                 f"{100 * (reference_top1(group[0]) - _mean_top1(group)):+.2f}",
                 f"{sum(timed) / len(timed):.2f}x" if timed else "-"]
        if with_step_time:
            cost = step_time.get((method, *bits))
            found.append(f"{cost:.2f}x" if cost else ("1.00x" if method == PLAIN_QAT else "-"))
        return found

    lines = []
    for bits in sorted(best, reverse=True):
        kquant, peer = best[bits].get("kquant"), best[bits].get("peer")
        margin = (f"{100 * (_mean_top1(kquant) - _mean_top1(peer)):+.2f}" if kquant and peer
                  else "-")
        lines.append(f"| W{bits[0]}A{bits[1]} | " + " | ".join(
            cells(kquant, True) + cells(peer, False) + [margin]) + " |")
    return lines


def step_times_of(suite, step_times):
    """The step-time records ({suite: records}) that cost `suite`'s rows, and the suite they
    were measured on: its own, else the one `STEP_TIMES_FROM` names."""
    source = suite if suite in step_times else STEP_TIMES_FROM.get(suite, suite)
    return step_times.get(source, []), source


def step_time_spread(timed):
    """Largest difference between one method's step-time ratios from separate runs, or None.

    Runs at different bit-widths measure the same code under different machine load, so this is
    the noise floor of the step-time comparison.
    """
    ratios = {}
    for t in timed:
        ratios.setdefault(t["method"], []).append(t["step_time_vs_plain_qat"])
    spreads = [max(r) - min(r) for r in ratios.values() if len(r) > 1]
    return max(spreads) if spreads else None


def _largest_parts(method, bits, groups):
    """Methods measured at `bits` ([weight, activation]) that are the largest
    '+'-combinations inside `method`."""
    def parts(name):
        return frozenset(name.split("+"))

    inside = [m for m, *b in groups if b == list(bits) and parts(m) < parts(method)]
    return [m for m in inside if not any(parts(m) < parts(other) for other in inside)]


def curves(records):
    """{label: [(weight bits, top-1 % as the mean over seeds)]} for each method's line; rows with
    other activation bits get a line of their own."""
    by_method = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in records:
        if r["method"] not in ("float", FINETUNED):
            label = r["method"] + ("" if r["activation_bits"] == r["weight_bits"]
                                   else f" (A{r['activation_bits']})")
            by_method[label][r["weight_bits"]].append(r)
    return {label: [(bits, 100 * _mean_top1(seeds[bits])) for bits in sorted(seeds)]
            for label, seeds in sorted(by_method.items())}


def plot(suite, records, path):
    """Top-1 against bits for each method of `suite` (`curves`), with float's and (after
    `mark_finetuned_reference`) the fine-tuned float's line."""
    finetuned = next((r for r in records if r["method"] == FINETUNED), None)
    lines = curves(records)
    columns = 1 + len(lines) // 20  # a long legend in columns, all of it in view
    with figures.figure(path, figsize=(4.5 + 3.5 * columns, 4.5)) as (plt, fig, ax):
        ax.axhline(100 * records[0]["float_top1"], color="gray", linestyle="--", label="float")
        if finetuned:
            ax.axhline(100 * reference_top1(finetuned), color="black", linestyle=":",
                       label=FINETUNED)
        colors = plt.get_cmap("tab20").colors  # more methods than the default cycle's 10 colours
        for i, (method, points) in enumerate(lines.items()):
            ax.plot(*zip(*points), marker="os^Dv"[i % 5], color=colors[i % len(colors)],
                    label=method)
        ax.set_xticks(sorted({bits for points in lines.values() for bits, _ in points}))
        ax.set_xlabel("bits (weights = activations)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(suite)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=columns)


def main(results_dir=os.path.join(ROOT, "benchmarks", "results")):
    """Writes docs/benchmarks.md and the plots from the records in `results_dir` (the first
    command-line argument, e.g. a copy of the committed records, if given)."""
    records = load(results_dir)
    step_times = load(results_dir, STEP_TIME_FILE)
    storages = load(results_dir, STORAGE_FILE)
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    lines = ["# Benchmarks", "",
             "Generated by `python benchmarks/report.py` from `benchmarks/results/*.jsonl`; each "
             "record holds the exact command that produced it. Every run starts from the same float "
             "model and trains the same epochs with the same schedule, in one process per suite "
             "invocation. Ratios are measured in the same process: `train_throughput_ratio` is "
             "training images/s against float training; `latency_ratio_*` is TFLite batch-1 "
             "latency against the float TFLite model (below 1 is faster); `size_ratio` is float "
             "TFLite bytes over this model's bytes. `drop` is float top-1 minus this model's Keras "
             "top-1, in points.", "", "Methods:", ""]
    lines += [f"- `{name}`: {text}" for name, text in method_descriptions(
        r["method"] for rows in records.values() for r in rows).items()]
    trained = float_starts.logs(ROOT)
    if trained:
        lines += ["", "## Float starts", "", "The float models the suites start from, from the "
                  "logs of `benchmarks/train_float_*.sh` (test top-1 after each epoch; the long "
                  "suite starts from `resnet20_cifar10_float_strong`; issue 17 asked for 90% "
                  "top-1 there, which neither recipe reached on the JPEG copy, so the long "
                  "suite's rows start from the best one, below the issue's 90%):", "",
                  "![float training curves](float-starts.png)", ""] + float_starts.table(trained)
        float_starts.plot(trained, os.path.join(ROOT, "docs", "float-starts.png"))
    for suite, rows in sorted(records.items()):
        mark_finetuned_reference(rows)
        rows.sort(key=lambda r: (r["method"] != "float", r["method"], -r["weight_bits"]))
        dataset = rows[0]["dataset"]
        label = "CIFAR-10 (JPEG q75 copy)" if dataset == "cifar10" else dataset
        lines += ["", f"## {suite}: {rows[0]['model']} on {label}", "",
                  protocol(rows), "", f"![accuracy against bits]({suite}.png)", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cell(r, c) for c in COLUMNS) + " |" for r in rows]
        measured = [r for r in rows if r.get("keras_top1") is not None]
        costs, steps_from = step_times_of(suite, step_times)
        elsewhere = "" if steps_from == suite else f"measured on `{steps_from}`'s steps"
        lines += ["", "The best kquant method and the best peer at each bit-width (mean top-1 over "
                  "seeds; drop from float; cost as training throughput against float and step time "
                  "against plain QAT" + (elsewhere and ", " + elsewhere) + "):", "",
                  "| bits | best kquant | top-1 | drop | throughput | step time | best peer | "
                  "top-1 | drop | throughput | kquant - peer |",
                  "|" + " --- |" * 11] + best_at_each_bit_width(measured, costs)
        lines += ["", goals_heading(rows), ""] + goals(measured)
        deployed = deployment(rows)
        if deployed:
            lines += ["", "The deployed model against kquant's integer-exact mode "
                      "(`tflite_export.verify`, `kquant.deploy`): the fraction of test images whose "
                      "int8 outputs are identical on each runtime, the worst layer fed TFLite's own "
                      "inputs, and the float path's top-1 agreement (`agreement`):", "",
                      "| " + " | ".join(DEPLOYMENT_COLUMNS) + " | targets |",
                      "|" + " --- |" * (len(DEPLOYMENT_COLUMNS) + 1)] + deployed
        stored = storages.get(suite, [])
        if stored:
            lines += ["", f"![weight storage]({suite}-storage.png)", "",
                      "Packed weights (`tflite_export.convert(weight_storage=...)`, "
                      "`benchmarks/weight_storage.py`): each model trained "
                      f"{stored[0]['train_steps']} steps from the float checkpoint, then "
                      "exported with each storage in one process; latency at batch 1, one "
                      "thread; outputs compared on the first test images with the int8 file's, "
                      "as the fraction of identical outputs and of equal top-1 on XNNPACK and on "
                      "the built-in kernels (there both files run the same kernels: what differs "
                      "is the bias, rounded at the coarser scale of the packed codes):",
                      "", "| method | bits | storage | layers stored | bytes | vs float | "
                      "TFLite top-1 (XNNPACK) | identical, same top-1 as int8 (XNNPACK / "
                      "built-in) | exact (XNNPACK) | XNNPACK latency | built-in latency | "
                      "XNNPACK partitions |", "|" + " --- |" * 12] + weight_storage(stored)
            plot_weight_storage(suite, stored, os.path.join(ROOT, "docs", f"{suite}-storage.png"))
        timed = step_times.get(suite, [])
        compared = against_plain_qat(measured, costs)
        if compared:
            lines += ["", "Techniques and new quantizers against the strongest plain QAT row at "
                      f"their bits (of {', '.join(f'`{p}`' for p in PLAIN_ROWS)}), the papers' "
                      "claim" + (elsewhere and f" (step times {elsewhere})") + "; a difference "
                      "no larger than the largest spread between seeds of one method at those "
                      "bits is seed noise (where no method ran there with several seeds, one "
                      "seed's sign decides):", ""] + compared
        spread = step_time_spread(timed)
        if timed:
            lines += ["", "Median training step time against plain QAT, measured in one process "
                      "with the methods taking turns (`benchmarks/step_time.py`), over all stages "
                      "of each schedule: below 1x where stages run with quantizers switched off "
                      "(their full-precision path skips the fake quantization)."
                      + (f" One method measured in separate runs differs by up to "
                         f"{spread:.2f}x: smaller differences are noise of this shared machine."
                         if spread else ""), "",
                      "| method | bits | step seconds | vs plain QAT | command | commit |",
                      "| --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {t['method']} | W{t['weight_bits']}A{t['activation_bits']} | "
                      f"{t['step_seconds']:.3f} | {t['step_time_vs_plain_qat']:.2f}x | "
                      f"`{t['command']}` | `{t.get('commit') or '?'}` |" for t in timed]
        notes = sorted({(r["method"], r["note"]) for r in rows if r.get("note")})
        lines += [""] + [f"- `{m}`: {n}" for m, n in notes]
        peers = [r for r in rows if r["method"] in PEERS]
        if peers:
            lines += ["", "Peer configurations, and why a cell is empty:", ""] + [
                f"- `{r['method']}` W{r['weight_bits']}A{r['activation_bits']}: "
                + "; ".join(f"{key.replace('_', ' ')}: {r[key]}" for key in (
                    "configuration", "unavailable", "export_unavailable") if r.get(key))
                for r in peers if any(r.get(k) for k in ("configuration", "unavailable",
                                                          "export_unavailable"))]
        runs = sorted({(r["command"], r.get("commit") or "?") for r in rows})
        lines += ["", "Commands (and the commit of the code that ran them):", ""]
        lines += [f"- `{command}` at `{commit}`" for command, commit in runs]
        plot(suite, measured, os.path.join(ROOT, "docs", f"{suite}.png"))
    with open(os.path.join(ROOT, "docs", "benchmarks.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:2])
