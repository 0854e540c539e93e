"""What a Newton solve reports, and how it says that it did not converge."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class NewtonFallbackWarning(RuntimeWarning):
    """Newton did not converge and the sequential loop computed the result instead.
    `warnings.simplefilter("error", NewtonFallbackWarning)` turns it into an error."""


@dataclass
class NewtonInfo:
    """What a Newton solve did: linear solves run, the residual after each, and whether
    it converged or fell back to the sequential loop. Pass one as `info=` to have a call
    fill it in (a packed batch is one solve)."""

    iterations: int = 0
    residual: float = float("nan")
    residuals: list[float] = field(default_factory=list)
    converged: bool = False
    fell_back: bool = False
    tol: float = 0.0
    max_iterations: int = 0

    def reset(self, tol: float, max_iterations: int) -> None:
        """Clears what an earlier solve left, for a new one."""
        self.__dict__.update(vars(NewtonInfo(tol=tol, max_iterations=max_iterations)))


def default_tol(dtype: torch.dtype) -> float:
    # relative to 1 + max|h|: a few hundred ulps of the state dtype
    return 1e-12 if dtype == torch.float64 else 1e-5
