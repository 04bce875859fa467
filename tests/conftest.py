from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI: bounded and deadline-free (shared machines are noisy). `thorough`: long local runs.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def thorough() -> bool:
    """Long-form stress runs: CARDMILL_THOROUGH=1 or the `thorough` hypothesis profile."""
    return bool(os.environ.get("CARDMILL_THOROUGH")) or (
        os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
    )
