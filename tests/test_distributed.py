"""Training under tf.distribute: MirroredStrategy on two logical CPUs, and
MultiWorkerMirroredStrategy with two local worker processes; every replica (and worker) keeps
the same weights and quantizer variables (bits, switches, levels, clips, the input range)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "distributed", "train_replicated.py")


def _result(process_output):
    line = next(l for l in process_output.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["none", "two-stage", "joint-distillation",
                                       "auxiliary-module"])
def test_mirrored_replicas_keep_identical_quantizers(technique):
    # A process of its own: logical devices must be set before TensorFlow starts.
    done = subprocess.run([sys.executable, SCRIPT, "mirrored", technique, "learned"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = _result(done.stdout)
    assert result["replicas"] == 2 and result["differing"] == []
    assert any(name.endswith("clip:0") for name in result["state"])  # quantizers were checked
    assert all(np.isfinite(v).all() for v in result["losses"].values())


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_local_workers_train_the_same_model():
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes = [subprocess.Popen(
        [sys.executable, SCRIPT, "multi-worker", "joint-distillation", "learned"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})})
        for index in range(2)]
    outputs = [p.communicate(timeout=900) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    chief, other = (_result(stdout) for stdout, _ in outputs)
    assert chief["replicas"] == 2 and chief["differing"] == [] == other["differing"]
    assert chief["state"].keys() == other["state"].keys()
    for name, value in chief["state"].items():
        np.testing.assert_allclose(other["state"][name], value, rtol=1e-6, err_msg=name)
