"""The serving tests' trained models and exports (ml-latest-small), shared with the batch tests."""

from serving.conftest import exported, ml_small, ml_small_popular, tiny_model  # noqa: F401
from serving.test_runtime import BLOCK_TORCH  # noqa: F401 - the import blocker of the torch-free tests
