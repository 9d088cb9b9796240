"""Training throughput and TFLite latency, measured the same way for every method."""
import time

import numpy as np

import tflite_export
from kquant.backend import keras


class StepTimer(keras.callbacks.Callback):
    """Records training images per second, skipping the first batches (tracing, warm-up)."""

    def __init__(self, batch_size, skip=10):
        super().__init__()
        self.batch_size, self.skip = batch_size, skip
        self.durations, self._start, self._seen = [], None, 0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._seen > self.skip:
            self.durations.append(time.perf_counter() - self._start)

    @property
    def images_per_second(self):
        return self.batch_size / float(np.median(self.durations))


def tflite_latency(tflite_bytes, input_shape, threads, runs=200):
    """Median seconds per batch-1 inference of a TFLite model with `threads` CPU threads."""
    interpreter = tflite_export.make_interpreter(tflite_bytes, num_threads=threads)
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
