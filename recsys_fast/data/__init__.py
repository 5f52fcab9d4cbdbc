"""The data model: ``Interactions`` (a user x item CSR with id maps), ``IdMap`` and CSR utilities.

Loaders and the synthetic generator are in ``recsys_fast.datasets``, splits in ``recsys_fast.split``.
"""

from .idmap import IdMap
from .interactions import Interactions

__all__ = ["IdMap", "Interactions"]
