"""Preference optimisation (IPO/DPO) after SFT: ``data`` (pairs), ``synthetic`` (the recipe's failed
variant), ``policy`` (PiSSA-aware policy + frozen reference), ``stage`` (the pipeline stage)."""
