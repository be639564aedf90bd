"""Data curation: many raw sources -> one training file with an exact language mix.

Stages, one module each: ``sources`` (streaming readers), ``normalize`` (chat messages,
NFC), ``langid`` + ``labels`` (nb/nn/en/other, mixed, translation), ``filters``, ``dedup``
(exact + MinHash/LSH), ``compose`` (exact shares), ``report``; ``stage.run`` ties them up.
Importing this package does nothing.
"""
