"""Imported by a multiprocessing forkserver that nortune starts (its preload list, set by
:func:`nortune.children.preload_forkservers`): every worker the forkserver forks ends when nortune
does, ``kill -9`` included, from its first instruction on. See :mod:`nortune.children`."""

from nortune import children

children.in_forkserver()
