"""Callbacks: drop-in pieces for any Lightning project."""

from gradbal.callbacks.save_pretrained import SavePretrained

__all__ = ["SavePretrained"]
