"""Fixtures: real git servers (git_fixtures), a real Gitea (gitea) and a real cluster +
operator (cluster_fixtures)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.cluster_fixtures import *  # noqa: F403
from tests.harness.git_fixtures import *  # noqa: F403
from tests.harness.gitea import gitea  # noqa: F401


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed:
        for i, op in enumerate(getattr(item, "gitferry_operators", [])):
            report.sections.append((f"gitferry operator {i} log", op.log()[-20000:]))
    return report
