"""Dynamical-systems reconstruction: chaotic systems with their reference values, the
field's measures, and recurrent models trained with teacher forcing (`recur.tasks.dynamics`
is the task that puts them under `recur train`)."""

from .metrics import (
    hellinger_distance,
    power_spectrum,
    power_spectrum_distance,
    prediction_error,
    state_space_divergence,
    valid_prediction_time,
)
from .model import DSRModel, Forcing, largest_lyapunov_exponent
from .systems import (
    SYSTEMS,
    KuramotoSivashinsky,
    Lorenz63,
    Lorenz96,
    Rossler,
    System,
    build_system,
    kaplan_yorke_dimension,
    lyapunov_spectrum,
    trajectory,
)

__all__ = [
    "SYSTEMS", "DSRModel", "Forcing", "KuramotoSivashinsky", "Lorenz63", "Lorenz96", "Rossler", "System",
    "build_system", "hellinger_distance", "kaplan_yorke_dimension", "largest_lyapunov_exponent", "lyapunov_spectrum",
    "power_spectrum", "power_spectrum_distance", "prediction_error", "state_space_divergence", "trajectory",
    "valid_prediction_time",
]
