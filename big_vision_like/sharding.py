"""Device mesh, regex sharding rules for parameters/optimizer state, batches.

`config.mesh` lists `(axis_name, size)` pairs, one size may be -1 (all the
remaining devices); the default puts every device on one axis `data`. The
batch is sharded over all mesh axes. Parameters and optimizer state are
sharded by `config.sharding_rules`: a list of `(regex, rule)` pairs, each
regex matching the whole `/`-joined name of a leaf (e.g. `params/Transformer/.../kernel`,
`opt/0/mu/Transformer/.../kernel`); the first match wins. Rules:

- `"replicate"`: a full copy on every device.
- `"fsdp"` or `"fsdp(axis='data', min_size=2**14)"`: the largest dimension
  divisible by the axis size is split over that axis (FSDP / ZeRO-3 style);
  leaves with no such dimension, or fewer than `min_size` elements, are
  replicated.
"""

import ast
import math
import re

import jax
from jax.experimental import mesh_utils
import numpy as np

from big_vision_like.tree_util import tree_names

P = jax.sharding.PartitionSpec
NamedSharding = jax.sharding.NamedSharding


def make_mesh(mesh_config=(("data", -1),), devices=None):
  """Builds a `jax.sharding.Mesh` from `(axis_name, size)` pairs."""
  devices = jax.devices() if devices is None else devices
  names = [name for name, _ in mesh_config]
  sizes = [int(size) for _, size in mesh_config]
  if len(set(names)) != len(names):
    raise ValueError(f"config.mesh has repeated axis names: {names}.")
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh may have at most one -1 size: {mesh_config}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"config.mesh {mesh_config}: {len(devices)} devices "
                       f"are not divisible by {known}.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"config.mesh {mesh_config} needs {math.prod(sizes)} "
                     f"devices, but there are {len(devices)}.")
  try:
    grid = mesh_utils.create_device_mesh(sizes, devices)
  except (AssertionError, ValueError, NotImplementedError):
    grid = np.asarray(devices).reshape(sizes)
  return jax.sharding.Mesh(grid, names)


def batch_sharding(mesh):
  """Sharding of a batch: leading dimension split over every mesh axis."""
  return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh):
  return NamedSharding(mesh, P())


def with_shardings(tree, shardings):
  """`jax.ShapeDtypeStruct`s of `tree`'s leaves carrying `shardings`."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      tree, shardings)


def _parse_rule(rule):
  """`"fsdp(axis='data')"` -> ("fsdp", {"axis": "data"})."""
  m = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", rule)
  if not m:
    raise ValueError(f"Bad sharding rule {rule!r} in config.sharding_rules.")
  name, args = m.group(1), m.group(2)
  kwargs = {}
  if args:
    call = ast.parse(f"f({args})", mode="eval").body
    if call.args:
      raise ValueError(f"Sharding rule {rule!r}: use keyword arguments.")
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
  return name, kwargs


def _replicate_spec(shape, mesh):
  del shape, mesh
  return P()


def _fsdp_spec(shape, mesh, axis=None, min_size=0):
  axis = axis or mesh.axis_names
  axes = (axis,) if isinstance(axis, str) else tuple(axis)
  unknown = [a for a in axes if a not in mesh.axis_names]
  if unknown:
    raise ValueError(f"fsdp axis {unknown} is not in the mesh axes "
                     f"{mesh.axis_names}.")
  n = math.prod(mesh.shape[a] for a in axes)
  if n == 1 or math.prod(shape) < min_size:
    return P()
  # Largest dimension divisible by the axis size; later dims win ties.
  order = sorted(range(len(shape)), key=lambda i: (shape[i], i), reverse=True)
  for i in order:
    if shape[i] % n == 0 and shape[i] >= n:
      spec = [None] * len(shape)
      spec[i] = axes if len(axes) > 1 else axes[0]
      return P(*spec)
  return P()


_RULES = {"replicate": _replicate_spec, "fsdp": _fsdp_spec}


def _compile(regex):
  try:
    return re.compile(regex)
  except re.error as e:
    raise ValueError(f"config.sharding_rules: bad regex {regex!r} ({e}).") \
        from None


def infer_shardings(tree, rules, mesh):
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs)."""
  compiled = [(_compile(regex), *_parse_rule(rule)) for regex, rule in rules]
  for _, name, _ in compiled:
    if name not in _RULES:
      raise ValueError(f"Unknown sharding rule {name!r} in "
                       f"config.sharding_rules; known: {sorted(_RULES)}.")
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  out = []
  for name, leaf in zip(tree_names(tree), leaves):
    for regex, rule, kwargs in compiled:
      if regex.fullmatch(name):
        out.append(NamedSharding(mesh, _RULES[rule](leaf.shape, mesh, **kwargs)))
        break
    else:
      raise ValueError(f"No rule in config.sharding_rules matches {name!r}; "
                       "end the list with ('.*', 'replicate').")
  return jax.tree_util.tree_unflatten(treedef, out)
