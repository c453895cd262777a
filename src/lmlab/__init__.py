"""lmlab: the whole life of a text foundation model, on a laptop CPU and beyond.

`import lmlab` stays light: torch and friends load only when a model does.
"""

__version__ = "0.1.0"
__all__ = ["load", "LM", "__version__"]


def __getattr__(name):
    if name in ("load", "LM"):
        from lmlab import lm
        return getattr(lm, name)
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
