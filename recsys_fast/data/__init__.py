"""Raw events to ``Interactions``: id maps, loaders, splits, synthetic data."""

from .idmap import IdMap
from .interactions import Interactions

__all__ = ["IdMap", "Interactions"]
