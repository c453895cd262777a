"""torch.compile options for the CPU decode step.

torch.compile fuses the decode step's many small ops (the cost that dominates a small model on a
CPU); it takes a minute or two once, so it is opt-in. A low realisation threshold stops inductor
from recomputing a layer's norm inside every row of the next int8 GEMV (44 -> 57 tok/s for one
int8 stream, AVX-512). The graph's wrapper is compiled to C++ too (cpp_wrapper): its ~400 Python
calls per step cost 1.3-2.8 ms of a 12-13.5 ms int8 step (Zen 1), for about a minute more of first
compilation.
"""

DECODE_OPTIONS = {"realize_cpu_opcount_threshold": 2, "cpp_wrapper": True}


def keep_cache_on_disk() -> None:
    """Inductor's compiled code goes under lmlab's cache folder (unless TORCHINDUCTOR_CACHE_DIR is
    set), so a later process reuses it instead of compiling again, and it outlives /tmp."""
    import os

    from lmlab.model.io.resolve import lmlab_home

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(lmlab_home() / "inductor"))
