"""Whatever a user types wrong gets one message naming it, exit code 2 and no traceback."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvla_hpc.config.loader import ConfigError, load_config
from dvla_hpc.config.schema import Config

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def main_cli(tmp_path: Path, *args: str, ranks: int = 1) -> subprocess.CompletedProcess[str]:
    prefix = [str(MPIEXEC), "-n", str(ranks)] if ranks > 1 else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    return subprocess.run([*prefix, sys.executable, "-m", "dvla_hpc.main", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=180)


def refused(proc: subprocess.CompletedProcess[str], *named: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for text in named:
        assert text in proc.stderr, proc.stderr[-2000:]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "broken.yaml").write_text("run: [\n")
    (tmp_path / "not_a_checkpoint.pt").write_text("hello")
    (tmp_path / "empty_run").mkdir()
    return tmp_path


CASES = {
    "missing config file": (["--config", "nope.yaml"], ["nope.yaml", "does not exist"]),
    "config not YAML": (["--config", "broken.yaml"], ["broken.yaml", "not valid YAML"]),
    "override of the wrong type": (["run.total_env_steps=many"], ["run.total_env_steps"]),
    "unknown key": (["learn.grup_size=4"], ["learn.grup_size"]),
    "override without =": (["learn.group_size"], ["learn.group_size"]),
    "resume path missing": (["--resume", "gone"], ["run.resume", "gone"]),
    "resume file not a checkpoint": (["--resume", "not_a_checkpoint.pt"], ["run.resume", "not_a_checkpoint.pt"]),
    "resume directory without checkpoints": (["--resume", "empty_run"], ["run.resume", "empty_run"]),
    "init-from missing": (["--init-from", "gone"], ["run.init_from"]),
    "unknown env name": (["env.name=tabletop_rech"], ["env.name", "tabletop_rech"]),
    "unknown gymnasium id": (["env.name=gymnasium", "env.gym_id=Reachr-v5"], ["Reachr-v5"]),
    "negative plan rank count": (["--plan", "--ranks", "-3"], ["-3"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_single_process_bad_input(files, case):
    args, named = CASES[case]
    refused(main_cli(files, "--out", "run", *args), *named)
    assert not (files / "run").exists()


@pytest.mark.mpi
@pytest.mark.parametrize("args, ranks, named", [
    (["run.out=run"], 2, ["2 ranks", "mpiexec -n 3"]),
    (["run.out=run", "layout.learn_ranks=4"], 3, ["learn"]),
    (["run.out=run", "env.name=nosuch"], 3, ["env.name", "nosuch"]),
    (["run.out=run", "--resume", "gone"], 3, ["run.resume"]),
])
def test_mpi_bad_input_ends_every_rank_with_exit_2(files, args, ranks, named):
    refused(main_cli(files, *args, ranks=ranks), *named)
    assert not (files / "run").exists()


def _leaf_keys() -> list[str]:
    keys = []
    for section in dataclasses.fields(Config):
        keys += [f"{section.name}.{leaf.name}" for leaf in dataclasses.fields(section.type
                 if isinstance(section.type, type) else section.default_factory)]
    return keys


KEYS = _leaf_keys()
VALUES = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.booleans(),
                   st.text(max_size=12), st.sampled_from(["", "[", "{a: 1}", "- 1", "~", "1e999", "0x10"]))
OVERRIDE = st.one_of(
    st.builds(lambda key, value: f"{key}={value}", st.sampled_from(KEYS), VALUES),
    st.builds(lambda key, value: f"{key}={value}", st.text(max_size=20), VALUES),
    st.text(max_size=30))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OVERRIDE, max_size=4))
def test_fuzzed_overrides_load_or_name_the_problem(overrides):
    try:
        cfg = load_config(None, overrides)
    except ConfigError as err:
        assert str(err)
    else:
        assert isinstance(cfg, Config)
