"""Build .venv-sf/, a separate venv with Sample Factory 2.1.1, for the Reacher-v5 pixel comparison.

    python -m dvla_hpc.bench.sample_factory_venv [--force] [--venv PATH]

Idempotent: a stamp file records the recipe; a venv whose stamp matches is reused as it is.

Why the recipe looks like this (from sample-factory 2.1.1's PyPI METADATA):
  * SF 2.1.1 requires numpy<2 and gymnasium<1.0, but Reacher-v5 exists only from gymnasium 1.0.
    SF's own code runs on gymnasium 1.x, so SF is installed with --no-deps and its dependencies are
    listed here by hand, with gymnasium[mujoco] at the version the main venv uses.
  * Of SF's declared dependencies, wandb and huggingface-hub are imported only with --with_wandb or
    by the hub upload/download tools, pyglet and tensorboard not at all by training: left out.
    opencv-python becomes opencv-python-headless<4.12 (no libGL needed; 4.12+ requires numpy>=2).
  * torch==2.13.0 matches the main venv (pip finds the CPU build on local disk); mujoco 4.0.0 works
    with numpy 1.26.
  * This repo goes in with --no-deps -e, so dvla_hpc.envs.gymnasium_env (numpy, mujoco and
    gymnasium only) builds exactly the env the other measurements use.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv-sf"
STAMP_NAME = ".dvla-sf-stamp.json"
SF_VERSION = "2.1.1"
GYMNASIUM_VERSION = "1.4.0"
DEPENDENCIES = (
    "numpy<2",
    "torch==2.13.0",
    "mujoco==4.0.0",
    f"gymnasium[mujoco]=={GYMNASIUM_VERSION}",
    # Sample Factory 2.1.1's runtime dependencies, minus what training never imports (see above)
    "tensorboardx>=2.0",
    "psutil>=5.7.0",
    "threadpoolctl>=2.0.0",
    "colorlog",
    "signal-slot-mp>=1.0.3,<2.0",
    "filelock",
    "opencv-python-headless<4.12",
)
NO_DEPS = (f"sample-factory=={SF_VERSION}",)
RECIPE = {"dependencies": list(DEPENDENCIES), "no_deps": list(NO_DEPS), "editable": "dvla_hpc (--no-deps)"}

SMOKE_CHECK = """
import json, os
os.environ.setdefault("MUJOCO_GL", "egl")
from importlib.metadata import version
import numpy, torch, mujoco, gymnasium, cv2
from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
from sample_factory.envs.env_utils import register_env
from sample_factory.train import run_rl
from dvla_hpc.envs.gymnasium_env import make_rendering_gym_env
env = make_rendering_gym_env("Reacher-v5", 64)
env.reset(seed=0)
env.step(env.action_space.sample())
frame = env.render()
assert frame.shape == (64, 64, 3) and frame.dtype == numpy.uint8, (frame.shape, frame.dtype)
env.close()
print(json.dumps({"python": __import__("sys").version.split()[0], "sample_factory": version("sample-factory"),
                  "numpy": numpy.__version__, "torch": torch.__version__, "mujoco": mujoco.__version__,
                  "gymnasium": gymnasium.__version__, "opencv": cv2.__version__}))
"""


class VenvError(RuntimeError):
    """The Sample Factory venv could not be built or does not work; the message says which step."""


def venv_python(venv: Path = DEFAULT_VENV) -> Path:
    return Path(venv) / "bin" / "python"


def _shown(cmd: list[str]) -> str:
    return " ".join("<script>" if "\n" in part else part for part in cmd)


def _run(step: str, cmd: list[str], timeout_s: float) -> str:
    print(f"[sf-venv] {step}: {_shown(cmd)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, env=env)
    except subprocess.TimeoutExpired as exc:
        raise VenvError(f"{step}: timed out after {timeout_s:.0f} s: {_shown(cmd)}") from exc
    except OSError as exc:
        raise VenvError(f"{step}: could not run {cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise VenvError(f"{step} failed (exit code {proc.returncode}): {_shown(cmd)}\n{tail}")
    return proc.stdout


def read_stamp(venv: Path = DEFAULT_VENV) -> dict | None:
    try:
        return json.loads((Path(venv) / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def ensure_venv(venv: Path = DEFAULT_VENV, force: bool = False, base_python: str = sys.executable) -> dict:
    """Build (or reuse) the venv; returns the stamp: the recipe and the versions installed."""
    venv = Path(venv)
    stamp = read_stamp(venv)
    if not force and stamp is not None and stamp.get("recipe") == RECIPE and venv_python(venv).exists():
        return stamp
    python = str(venv_python(venv))
    stamp_path = venv / STAMP_NAME
    stamp_path.unlink(missing_ok=True)
    if not venv_python(venv).exists() or force:
        _run("create venv", [base_python, "-m", "venv", "--clear", str(venv)], 300)
    pip = [python, "-m", "pip", "install", "--quiet"]
    _run("install dependencies", [*pip, *DEPENDENCIES], 1800)
    _run("install Sample Factory (--no-deps: it pins gymnasium<1.0, Reacher-v5 needs 1.x)",
         [*pip, "--no-deps", *NO_DEPS], 600)
    _run("install this repo (--no-deps, editable)", [*pip, "--no-deps", "-e", str(REPO)], 600)
    out = _run("smoke check (imports, one rendered Reacher-v5 frame)", [python, "-c", SMOKE_CHECK], 300)
    try:
        versions = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise VenvError(f"smoke check printed no versions:\n{out[-2000:]}") from exc
    stamp = {"recipe": RECIPE, "versions": versions}
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    args = parser.parse_args(argv)
    try:
        stamp = ensure_venv(args.venv, force=args.force)
    except VenvError as err:
        print(f"[sf-venv] ERROR: {err}", file=sys.stderr)
        return 1
    print(f"[sf-venv] ready: {venv_python(args.venv)}")
    print(json.dumps(stamp["versions"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
