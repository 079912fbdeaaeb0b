"""Shared pytest set-up: the Kubernetes control-plane harness fixtures and the
Hypothesis profile.

Property tests assert behaviour, not speed: on a loaded 2-core CI machine the
data-generation health check and per-example deadlines only add flakes, so the
default profile turns those two off (the examples themselves are unchanged).
"""

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.harness.plugin"]

settings.register_profile(
    "palisade",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("palisade")
