"""Repository-level pytest configuration.

The bitnet plugin itself is loaded through its `pytest11` entry point (install the project
first: `pip install -e '.[dev]'`; pytester comes from `-p pytester` in pyproject's addopts, not
`pytest_plugins` here, so that `pytest --engine=SPEC` run from another folder can collect the
parity suite inside this checkout). Here: Hypothesis
profiles (`HYPOTHESIS_PROFILE=ci` on CI: derandomised so a CI failure reproduces).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
