"""digitdet: find every digit in a photo (class + box) and read the whole number.

    import digitdet
    reader = digitdet.Reader()          # the bundled model
    reader("house.jpg").number          # "418"

``Reader``, ``Result`` and ``Digit`` live in :mod:`digitdet.api`; they are imported on first use,
so ``import digitdet`` (and ``digitdet --version``) does not import torch.
"""
__version__ = "0.2.0"
__all__ = ["Reader", "Result", "Digit", "__version__"]


def __getattr__(name: str):
    if name in ("Reader", "Result", "Digit"):
        from digitdet import api

        return getattr(api, name)
    raise AttributeError(f"module 'digitdet' has no attribute {name!r}")
