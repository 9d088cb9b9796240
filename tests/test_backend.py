import subprocess
import sys


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, timeout=300)


def test_kquant_selects_keras_2():
    result = run("import kquant; from kquant.backend import keras, tf; "
                 "print(keras.__version__, tf.keras.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].startswith("2.") and "tf_keras" in result.stdout


def test_keras_3_already_bound_is_a_clear_error():
    result = run("import tensorflow as tf; tf.keras.layers; import kquant")
    assert result.returncode != 0
    assert "kquant needs Keras 2 (tf_keras)" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr


def test_importing_kquant_prints_nothing_of_tensorflow_loading():
    result = run("import kquant")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_first_computation_prints_no_cuda_probe_error():
    # TensorFlow probes CUDA when devices are first listed, not when it loads; on a machine
    # without a GPU that probe logs "failed call to cuInit" at error level.
    result = run("import kquant; from kquant.backend import tf; print(float(tf.constant(1.) + 1))")
    assert result.returncode == 0 and result.stdout == "2.0\n", result.stderr
    assert result.stderr == "", result.stderr


def test_captured_stderr_drops_library_lines_unless_the_work_fails():
    result = run("import os\n"
                 "from kquant.quiet import captured_stderr\n"
                 "with captured_stderr():\n"
                 "    os.write(2, b'status line\\n')\n"
                 "try:\n"
                 "    with captured_stderr():\n"
                 "        os.write(2, b'why it failed\\n')\n"
                 "        raise RuntimeError('failed')\n"
                 "except RuntimeError:\n"
                 "    os.write(2, b'after\\n')\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "why it failed\nafter\n"
