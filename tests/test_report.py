"""The benchmark report: step-time records kept apart, techniques compared with plain QAT."""
import json

import pytest

from benchmarks import report


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_keeps_step_times_apart_and_compares_with_plain_qat(tmp_path):
    row = dict(suite="s", weight_bits=2, activation_bits=2, float_top1=0.8)
    write(tmp_path / "s.jsonl", [dict(row, method="kquant-pact-calibrated", keras_top1=0.70),
                                 dict(row, method="direct-levels", keras_top1=0.73),
                                 dict(row, method="two-stage", keras_top1=0.65),
                                 dict(row, method="channel-aware", keras_top1=0.72),
                                 dict(row, method="direct-levels+channel-aware", keras_top1=0.74),
                                 dict(row, method="two-stage+direct-levels+channel-aware",
                                      keras_top1=0.75),
                                 dict(row, method="qkeras", keras_top1=0.20)])
    write(tmp_path / report.STEP_TIME_FILE, [dict(suite="s", method="direct-levels", weight_bits=2,
                                                  step_time_vs_plain_qat=1.25)])
    rows = report.load(str(tmp_path))["s"]
    timed = report.load(str(tmp_path), report.STEP_TIME_FILE)["s"]
    assert len(rows) == 7 and len(timed) == 1
    lines = report.against_plain_qat(rows, timed)
    assert len(lines) == 5  # neither plain QAT itself nor the peer
    assert lines[0].startswith("- `direct-levels` W2A2: +3.00 points") and "beats it: yes" in lines[0]
    assert "step time 1.25x" in lines[0]
    assert "-5.00 points" in lines[1] and "beats it: NO" in lines[1] and "not measured" in lines[1]
    assert "against its parts" not in lines[0] + lines[1] + lines[2]
    # A combination is also compared with its largest measured parts.
    assert lines[3].endswith("against its parts: `direct-levels` +1.00, `channel-aware` +2.00")
    assert lines[4].endswith("against its parts: `two-stage` +10.00, "
                             "`direct-levels+channel-aware` +1.00")


def test_techniques_are_held_against_the_strongest_plain_row(tmp_path):
    row = dict(suite="s", weight_bits=2, activation_bits=2, float_top1=0.8)
    write(tmp_path / "s.jsonl", [dict(row, method="kquant-pact-calibrated", keras_top1=0.70),
                                 dict(row, method="pact-calibrated-per-channel", keras_top1=0.74),
                                 dict(row, method="two-stage", keras_top1=0.72)])
    lines = report.against_plain_qat(report.load(str(tmp_path))["s"], [])
    # Per-channel plain QAT is itself compared with the other plain row, and the technique
    # with per-channel, the stronger; per-layer plain QAT with nothing.
    assert lines == [
        "- `pact-calibrated-per-channel` W2A2: +4.00 points against plain QAT "
        "(`kquant-pact-calibrated` 70.00): beats it: yes; step time not measured",
        "- `two-stage` W2A2: -2.00 points against plain QAT (`pact-calibrated-per-channel` "
        "74.00): beats it: NO; step time not measured"]


def test_step_time_spread_is_the_largest_difference_between_runs_of_one_method():
    timed = [dict(method=m, step_time_vs_plain_qat=ratio)
             for m, ratio in [("a", 1.0), ("a", 1.4), ("b", 2.0), ("b", 2.1), ("c", 3.0)]]
    assert abs(report.step_time_spread(timed) - 0.4) < 1e-9
    assert report.step_time_spread(timed[4:]) is None


def test_several_seeds_are_compared_by_their_mean_with_the_spread(tmp_path):
    row = dict(suite="s", weight_bits=2, activation_bits=2, float_top1=0.8)
    write(tmp_path / "s.jsonl", [
        dict(row, method="kquant-pact-calibrated", keras_top1=top1, seed=seed)
        for seed, top1 in enumerate([0.70, 0.72, 0.74])] + [
        dict(row, method="two-stage", keras_top1=top1, seed=seed)
        for seed, top1 in enumerate([0.73, 0.75])] + [
        dict(row, method="two-stage", keras_top1=0.10, seed=9, superseded="an old run")])
    rows = report.load(str(tmp_path))["s"]
    assert len(rows) == 5  # the superseded row is left out
    [line] = report.against_plain_qat(rows, [])
    assert line.startswith("- `two-stage` W2A2: +2.00 points (mean of 2 seeds, spread 2.00) "
                           "against plain QAT (`kquant-pact-calibrated` 72.00 (mean of 3 seeds, "
                           "spread 4.00)): beats it: within seed noise (4.00);")
    # Beyond the largest seed spread at those bits, a difference decides again.
    rows.append(dict(row, method="lsq", keras_top1=0.77, seed=0))
    assert "+5.00 points against plain QAT (`kquant-pact-calibrated` 72.00 (mean of 3 seeds, "\
        "spread 4.00)): beats it: yes;" in report.against_plain_qat(rows, [])[1]
    assert report.seed_spread(report.seed_groups(rows), [2, 2]) == pytest.approx(4.0)
    assert report.seed_spread(report.seed_groups(rows), [4, 4]) is None


def test_rows_with_other_activation_bits_are_compared_at_their_own_bits(tmp_path):
    row = dict(suite="s", seed=0, float_top1=0.8, weight_bits=1)
    write(tmp_path / "s.jsonl", [
        dict(row, method="kquant-pact-calibrated", activation_bits=1, keras_top1=0.50),
        dict(row, method="kquant-pact-calibrated", activation_bits=2, keras_top1=0.60),
        dict(row, method="ctmq-chain", activation_bits=1, keras_top1=0.55),
        dict(row, method="ctmq-chain", activation_bits=2, keras_top1=0.58)])
    lines = report.against_plain_qat(report.load(str(tmp_path))["s"], [])
    assert lines[0].startswith("- `ctmq-chain` W1A1: +5.00 points against plain QAT "
                              "(`kquant-pact-calibrated` 50.00)")
    assert lines[1].startswith("- `ctmq-chain` W1A2: -2.00 points against plain QAT "
                              "(`kquant-pact-calibrated` 60.00)")


def test_deployment_table_checks_the_integer_exact_targets(tmp_path):
    row = dict(suite="s", seed=0, float_top1=0.8, keras_top1=0.7, layer_max_differing=0.0,
               layer_max_steps=0, xnnpack_partitions=1, micro_arena_bytes=79536)
    exact = {f"agreement_exact_{r}": 1.0 for r in ("xnnpack", "builtin", "micro")}
    write(tmp_path / "s.jsonl", [
        dict(row, method="kquant-pact-calibrated", weight_bits=4, activation_bits=4,
             agreement=0.995, **exact),
        dict(row, method="two-stage", weight_bits=2, activation_bits=2, agreement=0.90,
             **dict(exact, agreement_exact_micro=0.998), xnnpack_partitions=3,
             exact_examples=2000),
        dict(row, method="qkeras", weight_bits=2, activation_bits=2, agreement=None)])
    lines = report.deployment(report.load(str(tmp_path))["s"])
    assert len(lines) == 2  # the peer has no integer-exact fields
    assert lines[0].startswith("| kquant-pact-calibrated | W4A4 | 0 | 0.9950 | 1.0000 |")
    assert lines[0].endswith("exact >= 99.9%: yes; one partition: yes; float path >= 99%: yes |")
    assert "| 1.0000 | 1.0000 (on 2,000 images) | 0.9980 (on 2,000 images) |" in lines[1]
    assert lines[1].endswith(
        "exact >= 99.9%: NO; one partition: NO; float path >= 97%: NO |")


def test_best_kquant_row_and_best_peer_at_each_bit_width_with_their_costs(tmp_path):
    row = dict(suite="s", seed=0, float_top1=0.8, weight_bits=2, activation_bits=2,
               train_throughput_ratio=0.5)
    write(tmp_path / "s.jsonl", [
        dict(row, method="kquant-pact-calibrated", keras_top1=0.70),
        dict(row, method="two-stage", keras_top1=0.74, train_throughput_ratio=0.4),
        dict(row, method="two-stage", keras_top1=0.76, seed=1, train_throughput_ratio=0.6),
        dict(row, method="qkeras", keras_top1=0.60, train_throughput_ratio=0.9),
        dict(row, method="larq", keras_top1=0.65, train_throughput_ratio=0.8),
        dict(row, method="mct-qat", keras_top1=None, unavailable="no Keras API here"),
        dict(row, method="kquant-pact-calibrated", weight_bits=4, activation_bits=4,
             keras_top1=0.79),
        dict(row, method="larq", weight_bits=4, activation_bits=4, keras_top1=0.50,
             train_throughput_ratio=None)])  # a run too short to time
    rows = report.load(str(tmp_path))["s"]
    measured = [r for r in rows if r["keras_top1"] is not None]
    timed = [dict(method="two-stage", weight_bits=2, step_time_vs_plain_qat=1.1)]
    four, two = report.best_at_each_bit_width(measured, timed)
    assert two == ("| W2A2 | `two-stage` | 75.00 | +5.00 | 0.50x | 1.10x | `larq` | 65.00 | "
                   "+15.00 | 0.80x | +10.00 |")
    assert four == "| W4A4 | `kquant-pact-calibrated` | 79.00 | +1.00 | 0.50x | 1.00x | `larq` | " \
                   "50.00 | +30.00 | - | +29.00 |"
    [untimed] = report.goals([dict(row, method="lsq", keras_top1=0.75, train_throughput_ratio=None)])
    assert "drop 5.00 <= 3: NO" in untimed and "throughput" not in untimed
    # A peer that could not run is a cell saying so, never a number.
    [unavailable] = [r for r in rows if r["method"] == "mct-qat"]
    assert report._cell(unavailable, "keras_top1") == "not run"
    assert report._cell(unavailable, "drop") == "-"


def test_long_protocol_measures_drop_against_the_fine_tuned_float_row(tmp_path):
    row = dict(suite="s", seed=0, float_top1=0.90, epochs=30, train_throughput_ratio=0.5,
               weight_decay=5e-3)
    write(tmp_path / "s.jsonl", [
        dict(row, method="float", weight_bits=32, activation_bits=32, keras_top1=0.90, epochs=0),
        dict(row, method="float-finetuned", weight_bits=32, activation_bits=32, keras_top1=0.91),
        dict(row, method="kquant-pact-calibrated", weight_bits=2, activation_bits=2,
             keras_top1=0.885),
        dict(row, method="kquant-pact-calibrated", weight_bits=4, activation_bits=4,
             keras_top1=0.904)])
    rows = report.load(str(tmp_path))["s"]
    report.mark_finetuned_reference(rows)
    two, four = rows[2], rows[3]
    assert report._cell(two, "drop") == "+2.50" and report._cell(four, "drop") == "+0.60"
    assert report._cell(rows[0], "drop") == "+0.00"  # the checkpoint: epochs 0, its own reference
    # The long protocol's goals: W2A2 within 3.0, W4A4 within 0.5 of the fine-tuned float.
    lines = report.goals([two, four])
    assert "drop 2.50 <= 3: yes" in lines[0] and "drop 0.60 <= 0.5: NO" in lines[1]
    assert "W4A4 within 0.5 point of the fine-tuned float" in report.goals_heading(rows)
    # Its step times are the 4-epoch suite's (same model, batch and stage fractions).
    timed = {"cifar10-resnet20": [dict(method="kquant-pact-calibrated", weight_bits=2,
                                       step_time_vs_plain_qat=1.0)]}
    costs, source = report.step_times_of("cifar10-resnet20-long", timed)
    assert source == "cifar10-resnet20" and costs == timed["cifar10-resnet20"]
    assert report.step_times_of("s", timed) == ([], "s")
    [line] = [l for l in report.best_at_each_bit_width(rows, costs) if l.startswith("| W2A2")]
    assert "| 88.50 | +2.50 | 0.50x | 1.00x |" in line
    costs.append(dict(method="lsq", weight_bits=2, step_time_vs_plain_qat=1.2))
    [line] = report.against_plain_qat(rows + [dict(row, method="lsq", weight_bits=2,
                                                  activation_bits=2, keras_top1=0.89)], costs)
    assert "+0.50 points" in line and "step time 1.20x plain QAT's" in line
    assert report.protocol(rows) == ("Training from the float model: 30 epochs; weight decay "
                                      "0.005 (SGD's decoupled decay, not on quantizer variables).")
    assert report.protocol([dict(r, weight_decay=None) for r in rows]).endswith("decay none.")
    # A second seed: rows compared by their mean, against the fine-tuned rows' mean (0.905).
    rows += [dict(row, seed=1, method="float-finetuned", weight_bits=32, activation_bits=32,
                  keras_top1=0.90),
             dict(row, seed=1, method="kquant-pact-calibrated", weight_bits=2, activation_bits=2,
                  keras_top1=0.875)]
    report.mark_finetuned_reference(rows)
    [line] = [l for l in report.best_at_each_bit_width(rows, costs) if l.startswith("| W2A2")]
    assert "| 88.00 | +2.50 |" in line
    assert report._cell(rows[-1], "drop") == "+3.00"
    # The plot draws the same means: one point per bit-width, floats as lines of their own.
    assert report.curves(rows) == {"kquant-pact-calibrated": [(2, pytest.approx(88.0)),
                                                              (4, pytest.approx(90.4))]}


def test_weight_storage_rows_stay_apart_and_say_whether_the_size_goal_is_met(tmp_path):
    row = dict(suite="s", model="resnet20", method="lsq", weight_bits=4, activation_bits=4,
               train_steps=10, layers_stored={"int4": 19, "int8": 2}, tflite_top1=0.5,
               agreement_exact_xnnpack=1.0, xnnpack_partitions=3,
               **{f"{kind}_{p}": 1.0 for kind in (
                   "latency_ms", "latency_vs_int8", "latency_vs_float", "outputs_identical_to_int8",
                   "top1_agreement_with_int8") for p in ("xnnpack", "builtin")})
    write(tmp_path / "s.jsonl", [dict(suite="s", method="float", weight_bits=32,
                                      activation_bits=32, keras_top1=0.9)])
    write(tmp_path / report.STORAGE_FILE, [
        dict(row, weight_storage="int4", tflite_bytes=100, size_ratio=6.5),
        dict(row, weight_storage="int8", tflite_bytes=300, size_ratio=3.5),
        dict(row, weight_storage="auto", tflite_bytes=200, size_ratio=5.5),
        dict(suite="s", model="resnet20", method="dorefa", weight_bits=4, activation_bits=4,
             weight_storage="int4", unavailable="codes span -15..15")])
    assert len(report.load(str(tmp_path))["s"]) == 1  # the storage records are not accuracy rows
    lines = report.weight_storage(report.load(str(tmp_path), report.STORAGE_FILE)["s"])
    assert "6.50x (goal 6x: yes)" in lines[0] and "19 int4" in lines[0]
    assert "3.50x |" in lines[1]  # the size goal is for packed storage
    assert "5.50x (goal 6x: NO)" in lines[2]
    assert "not stored: codes span -15..15" in lines[3] and lines[3].count("|") == lines[0].count("|")


def test_float_training_logs_keep_the_last_run_of_each_epoch_and_skip_unfinished_ones(tmp_path):
    from benchmarks import float_starts

    line = "391/391 - 87s - loss: {l} - accuracy: {a} - val_loss: 0.7 - val_accuracy: {v} - 87s/epoch"
    log = tmp_path / "benchmarks" / "checkpoints" / "m_float.log"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join([
        "# a comment line", "Epoch 1/3", line.format(l=1.5, a=0.4, v=0.5),
        "Epoch 2/3", line.format(l=1.0, a=0.6, v=0.62),
        "Epoch 3/3",  # the sitting ended here; the next one resumed from epoch 2's backup
        "Epoch 3/3", line.format(l=0.9, a=0.7, v=0.61)]) + "\n")
    (tmp_path / "benchmarks" / "checkpoints" / "empty_float.log").write_text("Epoch 1/9\n")
    found = float_starts.logs(str(tmp_path))
    assert list(found) == ["m_float"]
    planned, epochs = found["m_float"]
    assert planned == 3 and sorted(epochs) == [1, 2, 3]
    assert epochs[3] == dict(loss=0.9, accuracy=0.7, val_loss=0.7, val_accuracy=0.61)
    assert float_starts.table(found)[2] == "| `m_float.log` | 3 of 3 | 61.00 | 62.00 (2) | 70.00 |"
    float_starts.plot(found, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_every_method_run_or_pending_is_described():
    import glob
    import os
    import re

    from tests.conftest import pending_runs

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = {n for _, flags in pending_runs()
             for n in re.search(r"--methods=(\S+)", flags)[1].split(",")}
    for path in glob.glob(os.path.join(root, "benchmarks", "results", "*.jsonl")):
        names |= {json.loads(line)["method"] for line in open(path) if line.strip()}
    described = report.method_descriptions(names)
    assert names <= set(described), names - set(described)
    assert report.method_descriptions(["two-stage+lsq"])["two-stage+lsq"] == (
        "`two-stage`'s training on the `lsq` model in place of kquant-pact-calibrated")
    assert "two-stage+lsq" not in report.method_descriptions(["lsq"])
