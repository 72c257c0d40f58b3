"""Repository-level pytest configuration.

The bitnet plugin itself is loaded through its `pytest11` entry point (install the project
first: `pip install -e '.[dev]'`; pytester comes from `-p pytester` in pyproject's addopts, not
`pytest_plugins` here, so that `pytest --engine=SPEC` run from another folder can collect the
parity suite inside this checkout). Here: Hypothesis profiles (`HYPOTHESIS_PROFILE=ci` on CI:
derandomised so a CI failure reproduces). Neither has a deadline or the too_slow health check:
on a loaded 2-core machine generation is slow for reasons that say nothing about the code under
test.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
