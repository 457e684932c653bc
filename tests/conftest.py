"""Shared pytest configuration: hypothesis profiles and device parametrisation."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# A fast profile for CI and a thorough one for local runs:
#   SKLEARN_VAE_HYPOTHESIS_PROFILE=thorough python -m pytest
settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("SKLEARN_VAE_HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def available_devices():
    """The devices tests run on: always CPU, plus CUDA where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.fixture(params=available_devices())
def device(request):
    """Parametrise a test over every available device."""
    return request.param
