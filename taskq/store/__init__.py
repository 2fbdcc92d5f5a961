"""The database behind one seam: ``Store`` opens it, ``Tx`` reads and writes it."""

from taskq.store.executions import Completion
from taskq.store.store import Revoked, Store, Tx

__all__ = ["Completion", "Revoked", "Store", "Tx"]
