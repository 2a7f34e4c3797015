"""`python -m jaxcomp.main` with tfds datasets replaced by `tfds.testing.mock_data`.

  python tests/launch/mock_tfds_main.py --config C --workdir W [--config.*]

Random examples with the named dataset's real features and classes (tfds's own
code), MOCK_EXAMPLES of them per split (default 16), never downloaded: how the
tests run the ImageNet grid end to end through launch/sweep.py.
"""

from __future__ import annotations

import os
import sys
from unittest import mock

import tensorflow_datasets as tfds
from absl import app

from jaxcomp import main

if __name__ == "__main__":
  with tfds.testing.mock_data(num_examples=int(os.environ.get("MOCK_EXAMPLES", "16")),
                              policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    app.run(lambda argv: sys.exit(main.main(argv)))
