"""Preference optimisation (IPO/DPO) after SFT: ``data`` (pairs), ``synthetic`` (the recipe's failed
variant), ``policy`` (PiSSA-aware policy + frozen reference), ``stage`` (the stage contract:
``fingerprint(recipe)`` and ``run(recipe, options)``)."""

from nortune.preference.stage import fingerprint, run

__all__ = ["fingerprint", "run"]
