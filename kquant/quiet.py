"""Keeps C++ libraries' stderr lines (TensorFlow's load-time INFO lines, the TFLite converter's
and LiteRT's status lines) off the screen, unless the work they come from fails, and
TensorFlow's retracing warning away from kquant's own per-program tracing.

Imports nothing heavy: `kquant.backend` uses it around loading TensorFlow.
"""
import contextlib
import logging
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_stderr(replay_on_error=True):
    """Captures what is written to file descriptor 2 (C++ and Python alike) for the duration.

    On success the captured text is dropped; if the body raises, it is written back first (it
    explains the error), unless `replay_on_error` is False.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed and replay_on_error:
                captured.seek(0)
                os.write(2, captured.read())


class _NotRetracing(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def without_retracing_warnings():
    """Drops TensorFlow's "calls ... triggered tf.function retracing" warning for the duration.

    TensorFlow counts traces per Python function; kquant traces one function per lowered
    program, a new program each call by design, so after a few calls the warning would blame
    the user's code for nothing.
    """
    logger, quiet = logging.getLogger("tensorflow"), _NotRetracing()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
