"""Training throughput and TFLite latency, measured the same way for every method."""
import time

import numpy as np

import tflite_export
from kquant.backend import keras


class StepTimer(keras.callbacks.Callback):
    """Records training images per second, skipping the first batches (tracing, warm-up).

    A step is the time from one batch's end to the next one's, so it includes every other
    callback's work (a technique's per-batch sampling or updates) and data loading.
    """

    def __init__(self, batch_size, skip=10):
        super().__init__()
        self.batch_size, self.skip = batch_size, skip
        self.durations, self._last, self._seen = [], None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._last = None  # the epoch boundary (evaluation, checkpoints) is not a step

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self._seen += 1
        if self._seen > self.skip and self._last is not None:
            self.durations.append(now - self._last)
        self._last = now

    @property
    def images_per_second(self):
        """None for a run too short to time (no step after the skipped ones)."""
        return self.batch_size / float(np.median(self.durations)) if self.durations else None


def tflite_latency(tflite_bytes, input_shape, threads, runs=200, runtime="xnnpack"):
    """Median seconds per batch-1 inference of a TFLite model with `threads` CPU threads on
    `runtime` ("xnnpack" or "builtin", see `tflite_export.make_interpreter`)."""
    interpreter = tflite_export.make_interpreter(tflite_bytes, num_threads=threads,
                                                 runtime=runtime)
    detail = interpreter.get_input_details()[0]
    example = np.zeros((1, *input_shape), dtype=detail["dtype"])
    times = []
    for i in range(runs + 20):
        interpreter.set_tensor(detail["index"], example)
        start = time.perf_counter()
        interpreter.invoke()
        if i >= 20:
            times.append(time.perf_counter() - start)
    return float(np.median(times))
