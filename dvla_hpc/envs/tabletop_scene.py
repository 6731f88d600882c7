"""MJCF for the tabletop reach scene: a table, three coloured cubes and an xy-actuated effector."""
from __future__ import annotations

# Geometry in metres; the table surface is z = 0.
CUBE_HALF_SIZE = 0.02
CUBE_WORKSPACE_HALF = 0.15  # cube centres lie in [-0.15, 0.15]^2
EFFECTOR_LIMIT = 0.18  # effector slide joints and actuator targets range over [-0.18, 0.18]
EFFECTOR_RADIUS = 0.016
EFFECTOR_HEIGHT = 2 * CUBE_HALF_SIZE + EFFECTOR_RADIUS + 0.01  # clear of the cube tops
CAMERA_VIEW_SIZE = 0.40  # side of the square patch of table the top camera sees
TIMESTEP = 0.01

CUBE_COLOURS = ("red", "green", "blue")
CUBE_RGBA = {
    "red": "0.9 0.08 0.08 1",
    "green": "0.08 0.8 0.08 1",
    "blue": "0.1 0.15 0.95 1",
}

# Position servo for the effector: stiff and critically damped, so one 0.1 s control step settles.
EFFECTOR_MASS = 0.2
ACTUATOR_KP = 400.0
ACTUATOR_KV = 2.0 * (ACTUATOR_KP * EFFECTOR_MASS) ** 0.5


def _cube_body(index: int, colour: str) -> str:
    return f"""
    <body name="cube{index}" pos="0 0 {CUBE_HALF_SIZE}">
      <freejoint name="cube{index}_free"/>
      <geom name="cube{index}" type="box" size="{CUBE_HALF_SIZE} {CUBE_HALF_SIZE} {CUBE_HALF_SIZE}"
            material="{colour}" mass="0.05"/>
    </body>"""


def build_scene_xml(image_size: int) -> str:
    """The whole scene; the offscreen buffer is sized so the renderer accepts image_size."""
    offscreen = max(image_size, 64)
    materials = "\n".join(
        f'    <material name="{name}" rgba="{rgba}" specular="0" shininess="0"/>'
        for name, rgba in CUBE_RGBA.items()
    )
    cubes = "".join(_cube_body(i, colour) for i, colour in enumerate(CUBE_COLOURS))
    limit = EFFECTOR_LIMIT
    return f"""
<mujoco model="tabletop_reach">
  <option timestep="{TIMESTEP}" integrator="implicitfast">
    <flag sleep="enable"/>  <!-- resting cubes cost nothing until disturbed -->
  </option>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{offscreen}" offheight="{offscreen}"/>
    <headlight ambient="0.25 0.25 0.25" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <asset>
{materials}
    <material name="table" rgba="0.32 0.32 0.34 1" specular="0" shininess="0"/>
    <material name="effector" rgba="0.97 0.97 0.97 1" specular="0" shininess="0"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 1" dir="0 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <camera name="top" pos="0 0 1" projection="orthographic" fovy="{CAMERA_VIEW_SIZE}"/>
    <geom name="table" type="plane" size="0.5 0.5 0.02" material="table"/>{cubes}
    <body name="effector" pos="0 0 {EFFECTOR_HEIGHT}">
      <joint name="effector_x" type="slide" axis="1 0 0" limited="true" range="{-limit} {limit}"/>
      <joint name="effector_y" type="slide" axis="0 1 0" limited="true" range="{-limit} {limit}"/>
      <geom name="effector" type="sphere" size="{EFFECTOR_RADIUS}" material="effector"
            mass="{EFFECTOR_MASS}" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <position name="effector_x" joint="effector_x" kp="{ACTUATOR_KP}" kv="{ACTUATOR_KV}"
              ctrllimited="true" ctrlrange="{-limit} {limit}"/>
    <position name="effector_y" joint="effector_y" kp="{ACTUATOR_KP}" kv="{ACTUATOR_KV}"
              ctrllimited="true" ctrlrange="{-limit} {limit}"/>
  </actuator>
</mujoco>
"""
