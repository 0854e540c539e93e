"""Random inputs for a family's `example_inputs`: one generator, seeded, shared by tests
and benchmarks, so both run on the same inputs."""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F


def check_case(case: str, cases: Collection[str]) -> None:
    """An `example_inputs` case: one of `cases`, or a ValueError naming them."""
    if case not in cases:
        raise ValueError(f"case must be one of {list(cases)}; got {case!r}")


class RandomInputs:
    """Tensors drawn from one seeded CPU generator, then moved to `device` and `dtype`.

    Every tensor is a leaf; `grad=True` (the default) sets requires_grad, so tests
    differentiate with respect to it.
    """

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None):
        self.generator = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def _leaf(self, x: torch.Tensor, grad: bool, dtype: torch.dtype | None = None) -> torch.Tensor:
        return x.to(device=self.device, dtype=dtype or self.dtype).requires_grad_(grad)

    def normal(self, *shape: int, std: float = 1.0, grad: bool = True) -> torch.Tensor:
        return self._leaf(torch.randn(*shape, generator=self.generator, dtype=torch.float64) * std, grad)

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0, grad: bool = True) -> torch.Tensor:
        x = torch.rand(*shape, generator=self.generator, dtype=torch.float64) * (high - low) + low
        return self._leaf(x, grad)

    def log_decay(self, *shape: int, strength: float = 1.0, grad: bool = True) -> torch.Tensor:
        """logsigmoid of standard normals times `strength`: about −0.8 · strength per step."""
        x = F.logsigmoid(torch.randn(*shape, generator=self.generator, dtype=torch.float64)) * strength
        return self._leaf(x, grad)

    def signs(self, *shape: int) -> torch.Tensor:
        """±1 with equal odds (no gradient)."""
        x = torch.randint(0, 2, shape, generator=self.generator).to(torch.float64) * 2 - 1
        return self._leaf(x, False)

    def complex_normal(self, *shape: int, std: float = 1.0, grad: bool = True) -> torch.Tensor:
        real, imag = (torch.randn(*shape, generator=self.generator, dtype=torch.float64) for _ in range(2))
        cplx = torch.complex64 if self.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.complex128
        return self._leaf(torch.complex(real, imag) * std * 0.5**0.5, grad, cplx)
