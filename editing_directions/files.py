"""Reading edit files safely: `torch.load(weights_only=True)` only, every failure a readable error."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import torch

from editing_directions.errors import EditingError

_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")


def refusal_reason(error: pickle.UnpicklingError) -> str:
    """The specific lines of torch's weights_only refusal (e.g. 'Unsupported GLOBAL posix.system'), no boilerplate."""
    lines = [line.strip() for line in str(error).splitlines()]
    reason = [line.replace("WeightsUnpickler error:", "").strip() for line in lines
              if line and not line.startswith(_BOILERPLATE)]
    return " ".join(part for part in reason if part) or str(error)


def read_weights_only(
    path: str | Path,
    *,
    error: type[EditingError],  # exception class raised on failure
    what: str,  # what the file should be, for messages ("direction file", "mapper checkpoint")
    allowed_globals: Sequence[type] = (),  # extra classes the unpickler may rebuild (plain data, no code)
) -> object:
    """Load a checkpoint on the CPU without executing code; missing, corrupt or code-carrying files raise `error`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as refusal:
        raise error(f"{path}: refused by safe (weights_only) loading or not a {what}: {refusal_reason(refusal)}") \
            from None
    except Exception as failure:  # damaged bytes surface as RuntimeError, EOFError, IndexError, ... from torch.load
        raise error(f"{path}: unreadable or corrupt {what} ({type(failure).__name__}: {failure})") from None
