"""consumer/healthcheck.py: the consumer container's healthcheck reads the heartbeat file's age."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumer import healthcheck

REPO_ROOT = Path(__file__).resolve().parents[2]


def _heartbeat(tmp_path: Path, age_s: float) -> Path:
    path = tmp_path / "consumer.health"
    path.touch()
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    healthy, reason = healthcheck.check(str(_heartbeat(tmp_path, 5)), max_age_s=60)
    assert healthy, reason


def test_stale_heartbeat_is_unhealthy_and_says_how_old(tmp_path: Path) -> None:
    healthy, reason = healthcheck.check(str(_heartbeat(tmp_path, 300)), max_age_s=60)
    assert not healthy
    assert "300 s old" in reason


def test_age_is_measured_against_the_given_clock(tmp_path: Path) -> None:
    path = _heartbeat(tmp_path, 0)
    mtime = path.stat().st_mtime
    assert healthcheck.check(str(path), max_age_s=30, now=mtime + 29)[0]
    assert not healthcheck.check(str(path), max_age_s=30, now=mtime + 31)[0]
    # Touched "in the future" (the clock was set back since): just touched, not an error.
    assert healthcheck.check(str(path), max_age_s=30, now=mtime - 10) == (True, "heartbeat 0.0 s old")


def test_missing_file_is_unhealthy(tmp_path: Path) -> None:
    healthy, reason = healthcheck.check(str(tmp_path / "never-written"), max_age_s=60)
    assert not healthy
    assert "does not exist" in reason


def test_unset_health_file_is_unhealthy_and_names_the_variable() -> None:
    healthy, reason = healthcheck.check("", max_age_s=60)
    assert not healthy
    assert "CONSUMER_HEALTH_FILE" in reason


def test_main_reads_the_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONSUMER_HEALTH_FILE", str(_heartbeat(tmp_path, 1)))
    assert healthcheck.main([]) == 0
    monkeypatch.setenv("CONSUMER_HEALTH_FILE", str(_heartbeat(tmp_path, 500)))
    assert healthcheck.main(["--max-age", "120"]) == 1
    assert "stuck" in capsys.readouterr().out


def test_flag_overrides_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMER_HEALTH_FILE", str(tmp_path / "missing"))
    assert healthcheck.main(["--file", str(_heartbeat(tmp_path, 1))]) == 0


def test_max_age_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        healthcheck.main(["--file", "x", "--max-age", "0"])


@pytest.mark.parametrize(("age_s", "expected_rc"), [(1, 0), (1000, 1)])
def test_runs_as_the_script_docker_calls(tmp_path: Path, age_s: float, expected_rc: int) -> None:
    """The exact form of docker-compose.yml's healthcheck, from the image's working directory."""
    env = {**os.environ, "CONSUMER_HEALTH_FILE": str(_heartbeat(tmp_path, age_s))}
    result = subprocess.run(
        [sys.executable, "consumer/healthcheck.py", "--max-age", "120"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == expected_rc, result.stdout + result.stderr
    assert result.stdout.strip()
