"""The documented size limits of one call, and the one check that enforces them.

A request above a limit raises ``LimitError`` naming the limit, the size asked for and the way
to get the work done anyway, before anything large is allocated; ``MemoryError`` is left for
real allocation failures. The limits are module constants so a caller who has the memory can
raise them knowingly (``recsys_fast.limits.MAX_RESULT_ENTRIES = 2**30``).

| limit | value | what it bounds | the way around it |
| --- | --- | --- | --- |
| ``MAX_RESULT_ENTRIES`` | 2**27 (134M) | users x k of one ``recommend`` / ``similar_items`` call (1 GiB of ids and scores) | call in chunks of users, or ``recsys_fast.batch.score`` |
| ``MAX_K`` | 2**31 - 1 | ``k`` of any call (before clamping to the catalogue) | none needed: k above the catalogue is clamped |
| EASE ``max_items`` | 30,000 (a parameter) | the dense item x item matrices of ``EASE.fit`` | filter rare items, or pass a larger ``max_items`` |

``k`` above the catalogue is clamped, never an error: ``recommend(users, k)`` returns
``min(k, n_items)`` columns (rows padded with id -1 / score -inf when fewer items qualify).
"""

from __future__ import annotations

from .errors import LimitError

MAX_RESULT_ENTRIES = 2**27
MAX_K = 2**31 - 1


def check_result_size(n_rows: int, k: int, what: str = "recommend") -> None:
    """Refuse a result of ``n_rows x k`` entries above ``MAX_RESULT_ENTRIES``."""
    entries = int(n_rows) * int(k)
    if entries > MAX_RESULT_ENTRIES:
        raise LimitError(f"{what}: users x k = {n_rows} x {k}", entries, MAX_RESULT_ENTRIES,
                         "call it on chunks of users, or stream every user with recsys_fast.batch.score; "
                         "recsys_fast.limits.MAX_RESULT_ENTRIES raises the limit")
