"""The README's Python examples, run as written, one after the other as a reader would."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_readme_python_examples_run_as_written():
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
    # The schedule counts the batches the data really has: the cosine reaches 0 at the end.
    data, model = namespace["data"], namespace["model"]
    assert data.steps_per_epoch == len(list(data.train))
    assert namespace["report"].exact_agreement == 1.0
    assert namespace["report"].keras_accuracy > 0.85
