import subprocess
import sys

import pytest

from dvla_hpc.config.loader import ConfigError, load_config, parse_override
from dvla_hpc.config.schema import Config


def test_quickstart_is_the_default_and_loads():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.env.name == "tabletop_reach"
    assert cfg.run.total_env_steps > 0


def test_overrides_are_typed_and_applied():
    cfg = load_config(None, ["learn.lr=0.002", "env.envs_per_sampler=8", "run.progress_bar=false",
                             "run.out=/tmp/x"])
    assert cfg.learn.lr == pytest.approx(0.002)
    assert cfg.env.envs_per_sampler == 8
    assert cfg.run.progress_bar is False
    assert cfg.run.out == "/tmp/x"


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["learn.lr=1"]).learn.lr == 1.0
    with pytest.raises(ConfigError, match=r"env\.envs_per_sampler: expected int"):
        load_config(None, ["env.envs_per_sampler=2.5"])


@pytest.mark.parametrize("override, message", [
    ("learn.lrr=0.1", r"unknown key learn\.lrr"),
    ("nosection.key=1", r"unknown key nosection"),
    ("learn.lr=fast", r"learn\.lr: expected float"),
    ("run.progress_bar=3", r"run\.progress_bar: expected bool"),
    ("learn.group_size=1", r"learn\.group_size: 1 is below the minimum 2"),
    ("learn.clip_ratio=1.5", r"learn\.clip_ratio: 1\.5 is above the maximum"),
    ("run.mode=turbo", r"run\.mode: 'turbo' is not one of async, sync"),
    ("model.patch_size=6", r"model\.patch_size: 6 must divide env\.image_size 64"),
    ("env.envs_per_sampler=7", r"env\.envs_per_sampler: 7 must be even"),
    ("env.fault=crash", r"env\.fault: 'crash' needs env\.name=debug_faulty"),
    ("pipeline.poll_min_sleep_ms=5", r"pipeline\.poll_min_sleep_ms: 5\.0 is above pipeline\.poll_max_sleep_ms 2\.0"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_malformed_override_and_files(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("no_equals_sign")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)
    section = tmp_path / "section.yaml"
    section.write_text("learn: 3\n")
    with pytest.raises(ConfigError, match="learn: expected a mapping"):
        load_config(section)


def test_cli_rejects_bad_config_with_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dvla_hpc.main", "--out", str(tmp_path / "run"),
                           "learn.group_size=0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "learn.group_size" in proc.stderr
    assert not (tmp_path / "run").exists()
