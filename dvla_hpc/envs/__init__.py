"""Simulators behind the Env protocol.

Rendering must work headless: EGL is chosen before anything in this package imports mujoco.
Without a GPU, EGL is Mesa's llvmpipe, which hands every draw to a pool of one thread per core; at
64-128 px frames, waking them costs more than they save (an env worker's CPU per frame fell 15-20%
with them off, BENCHMARKS.md), and env workers already keep the cores busy, so draws run in the
calling thread unless LP_NUM_THREADS says otherwise. A GPU's EGL driver ignores it.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")
