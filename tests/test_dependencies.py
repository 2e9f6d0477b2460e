"""The lock (requirements/lock.txt) and pyproject.toml's ranges agree, and the lock is what is installed."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parent.parent


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"lock line {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _direct() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    found = []
    for req in map(Requirement, project["dependencies"] + extras["dev"]):
        if canonicalize_name(req.name) == canonicalize_name(project["name"]):  # dev names other extras
            found += [Requirement(r) for extra in sorted(req.extras) for r in extras[extra]]
        else:
            found.append(req)
    return found


def test_dev_installs_every_extra_the_tests_cover():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {canonicalize_name(r.name) for r in _direct()}
    for extra in ("faces", "cluster", "smol", "demo"):
        missing = [r for r in extras[extra] if canonicalize_name(Requirement(r).name) not in names]
        assert not missing, f"extra {extra}: {missing} not installed by dev, so CI would not test them"


def test_every_direct_dependency_is_locked_inside_its_range():
    lock = _lock()
    for req in _direct():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements/lock.txt: run bash tools/update_lock.sh"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"lock pins {req.name}=={lock[name]}, outside pyproject's {req.specifier}: regenerate the lock"
        )


def test_lock_header_names_the_command_that_made_it():
    head = (REPO / "requirements" / "lock.txt").read_text().splitlines()[:4]
    assert any("bash tools/update_lock.sh" in line for line in head)


def test_installed_versions_are_in_range():
    # Both CI environments: whatever got installed must satisfy the ranges it was resolved from.
    for req in _direct():
        installed = Version(metadata.version(req.name))
        assert req.specifier.contains(Version(installed.base_version), prereleases=True), (
            req.name,
            installed,
        )


@pytest.mark.skipif(os.environ.get("CI_ENV") != "locked", reason="only in .ci/run's locked environment")
def test_locked_environment_matches_the_lock_exactly():
    for name, version in _lock().items():
        # .public drops only a local label (torch's +cpu); post-releases (certifi's .post1) stay
        assert Version(Version(metadata.version(name)).public) == version, name
