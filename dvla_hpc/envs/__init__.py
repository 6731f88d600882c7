"""Simulators behind the Env protocol.

Rendering must work headless: EGL is chosen before anything in this package imports mujoco.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
