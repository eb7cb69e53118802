"""How torch's OpenMP threads wait between parallel regions; decided before torch loads.

A CPU forward or training step is thousands of short parallel regions. Between two of them
an idle OpenMP thread either sleeps (a futex wake-up per region) or spins (burning a core
that another program may want). libgomp reads the choice once, when torch is imported.
Measured on 2 cores, optimised micml eval forward at 512x512:

    alone:                      sleeping 2.01 s, spinning 10,000 iterations first 1.23 s
    two such processes at once: sleeping 2.2 s each, spinning 4.8 s each

and a DSFNet training step (crop 96, batch 4, with its data-loader worker) 1.74 s sleeping,
1.23 s spinning. So a job that has its cores to itself spins briefly (`own_cores`), and
every other job sleeps at once (the workflow's default for all jobs, rules/common.smk).
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

#: Spin iterations before an idle OpenMP thread sleeps in a job that owns its cores: enough
#: to bridge the gap between two torch ops (1,000 was not: 1.76 s in the measurement above;
#: 100,000 was no faster than 10,000).
SPIN_COUNT = 10_000


def own_cores(threads: int | None = None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Prepare this process to run torch on `threads` cores nobody else uses.

    Sets OMP_NUM_THREADS (when `threads` is given) and GOMP_SPINCOUNT; a GOMP_SPINCOUNT you
    set yourself is kept (`GOMP_SPINCOUNT=0`: sleep at once, for a machine shared with other
    work). Must run before torch is imported: afterwards libgomp has read its settings and
    this would change nothing, so that is an error.
    """
    if "torch" in sys.modules:
        raise RuntimeError("micml.openmp.own_cores must run before torch is imported (libgomp reads its "
                           "settings when torch loads); call it at the top of the script")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"own_cores: threads must be a positive integer, found {threads!r}")
        environ["OMP_NUM_THREADS"] = str(threads)
    environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
