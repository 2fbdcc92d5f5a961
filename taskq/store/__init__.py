"""The database behind one seam: ``Store`` opens it, ``Tx`` reads and writes it."""

from taskq.store.store import Completion, Revoked, Store, Tx

__all__ = ["Completion", "Revoked", "Store", "Tx"]
