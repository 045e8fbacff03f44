"""Shared fixtures. Tests use one torch thread (CI machines have 2 cores) and a temporary data dir."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tmp_data(tmp_path, monkeypatch):
    """Point the artifact profiles at a temporary directory for the test."""
    from circuitbook import artifacts, config

    profiles = {
        "ci": config.Profile("ci", tmp_path / "ci", shipped=False),
        "full": config.Profile("full", tmp_path / "artifacts", shipped=True),
    }
    monkeypatch.setattr(config, "PROFILES", profiles)
    monkeypatch.setattr(artifacts, "MANIFEST", tmp_path / "MANIFEST")
    monkeypatch.setattr(artifacts, "DATA", tmp_path)
    return tmp_path


def pytest_runtest_logreport(report):
    """Print each slow test's time as it finishes, so a CI log cut off by a time limit still says where time went."""
    if report.when == "call" and report.duration > 20:
        print(f"\n[{report.duration:6.0f} s] {report.nodeid}", flush=True)
