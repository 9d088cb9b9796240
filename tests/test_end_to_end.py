"""The README's main job, run as a user runs it."""
import json
import os
import subprocess
import sys

import pytest

import kquant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_main_job_trains_w4a4_on_digits_and_tflite_agrees(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py"),
                             f"--export_dir={tmp_path}"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    record = json.loads(line[len("RESULT "):])
    assert record["weight_bits"] == 4 and record["activation_bits"] == 4
    assert record["keras_top1"] > 0.85  # chance is 0.10
    assert record["agreement"] >= 0.99
    assert record["tflite_top1"] > 0.85
    assert record["float_tflite_bytes"] / record["tflite_bytes"] > 3.0
    assert os.path.getsize(record["tflite_path"]) == record["tflite_bytes"]
    # kquant's own lines only: no TensorFlow load-time, CUDA-probe, converter or LiteRT noise.
    for noise in ("I0000", "cuInit", "fully_quantize", "XNNPACK delegate", "oneDNN"):
        assert noise not in result.stderr + result.stdout, noise


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["two-stage", "progressive-bits", "stochastic-precision",
                                       "joint-distillation", "ctmq-cyclic", "auxiliary-module"])
def test_each_technique_trains_and_exports_from_the_main_job(tmp_path, technique):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py"),
                             f"--technique={technique}", "--epochs=4", "--float_reference=false",
                             f"--export_dir={tmp_path}",
                             *({"joint-distillation": ["--student_bits=2"],  # small_cnn: no Adds
                                "auxiliary-module": ["--attach_to=block2_relu,block3_relu"]}
                               .get(technique, []))],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert record["technique"] == technique
    assert record["keras_top1"] > 0.85 and record["agreement"] >= 0.98


@pytest.mark.slow
def test_float_then_calibrated_pact_from_the_saved_float_model(tmp_path):
    def run(*flags):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py"),
                                 f"--export_dir={tmp_path}", "--epochs=4", *flags],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Warning" not in result.stderr, result.stderr[-3000:]
        return json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[7:])

    float_path = str(tmp_path / "float.h5")
    float_record = run("--weight_bits=32", "--activation_bits=32", f"--save_model={float_path}")
    assert float_record["keras_top1"] > 0.85 and os.path.exists(float_path)
    record = run(f"--init_from={float_path}", "--activation_quantizer=pact", "--weight_bits=2",
                 "--activation_bits=2")
    assert record["keras_top1"] > 0.8 and record["agreement"] >= 0.97
    # LSQ with batch norm folded in, frozen for the last two epochs, on the Micro runtime.
    record = run(f"--init_from={float_path}", "--weight_quantizer=lsq", "--activation_quantizer=lsq",
                 "--per_channel", "--fold_batch_norm", "--freeze_batch_norm_epoch=2",
                 "--runtime=micro")
    assert record["keras_top1"] > 0.8 and record["exact_agreement"] == 1.0
    # 2-bit weights stored packed: more than 5x smaller than float (int8 storage: 3.5x), exact.
    packed = run(f"--init_from={float_path}", "--weight_quantizer=lsq", "--weight_bits=2",
                 "--activation_bits=2", "--weight_storage=int2")
    assert packed["weight_storage"] == "int2" and packed["exact_agreement"] == 1.0
    assert packed["float_tflite_bytes"] / packed["tflite_bytes"] > 5.0


def _usage_error(*flags):
    """stderr of the main job refused with a usage error (no traceback)."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py"), *flags],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr


def test_a_technique_plan_that_does_not_fit_the_epochs_is_a_usage_error():
    assert "the plan needs 8 epochs" in _usage_error(
        "--technique=ctmq-cyclic", "--cycles=3", "--epochs=4", "--float_reference=false",
        "--export_dir=", "--limit=64")


def test_flags_that_do_nothing_are_usage_errors_not_tracebacks():
    stderr = _usage_error("--weight_bits=32", "--activation_bits=32", "--per_channel",
                          "--calibrate_ranges", "--export_dir=")
    assert "I0000" not in stderr  # TensorFlow loaded quietly
    assert ("These flags do nothing here: --per_channel: the model is float, bits 32; "
            "--calibrate_ranges: it needs --init_from.") in stderr


def test_a_negative_weight_decay_is_a_usage_error():
    assert "--weight_decay=-0.001: must be >= 0" in _usage_error("--weight_decay=-0.001")


def test_bits_and_model_outside_the_choices_are_usage_errors():
    assert "--weight_bits=9: must be from 1 to 8, or 32 for the float model" in \
        _usage_error("--weight_bits=9")
    assert "--model=resnet50: value should be one of <mobilenet_v2|resnet20|small_cnn>" in \
        _usage_error("--model=resnet50")


def test_init_from_what_is_no_model_or_does_not_fit_the_data_is_a_usage_error(tmp_path):
    (tmp_path / "notes.h5").write_text("not a model")
    assert f"--init_from={tmp_path}/notes.h5: load_model: '{tmp_path}/notes.h5' is not a saved " \
        "Keras model" in _usage_error(f"--init_from={tmp_path}/notes.h5")
    cifar_sized = str(tmp_path / "resnet20.h5")
    kquant.models.build_model("resnet20", (32, 32, 3), 10).save(cifar_sized)
    assert f"--init_from={cifar_sized}: the model takes (32, 32, 3) and gives 10 logits; " \
        "--dataset=digits has images shaped (8, 8, 1) and 10 classes." in \
        _usage_error(f"--init_from={cifar_sized}")


@pytest.mark.slow
def test_a_second_run_does_not_overwrite_the_first_export(tmp_path):
    paths = []
    for _ in range(2):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py"),
                                 "--epochs=1", "--float_reference=false",
                                 f"--export_dir={tmp_path}"], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        paths.append(json.loads(next(l for l in result.stdout.splitlines()
                                     if l.startswith("RESULT "))[7:])["tflite_path"])
    assert paths[0].endswith("small_cnn_w4a4_none.tflite")
    assert paths[1].endswith("small_cnn_w4a4_none-1.tflite")
    assert sorted(os.listdir(tmp_path)) == ["small_cnn_w4a4_none-1.tflite",
                                            "small_cnn_w4a4_none.tflite"]
