"""The exact-duplicate key of a record: a 64-bit digest of its roles and case-folded words.

Near duplicates are datatrove's MinHash (``stage._stages``); which copy is kept is decided in
global record order by ``merge``.
"""

from __future__ import annotations

import hashlib


def content_digest(messages: list[dict[str, str]]) -> int:
    text = "\x1e".join(f"{m['role']}\x1f{' '.join(m['content'].lower().split())}" for m in messages)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
