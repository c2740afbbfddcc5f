"""Tests for the mesh, regex sharding rules and batch sharding (8 devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like import tree_util

P = jax.sharding.PartitionSpec


def test_eight_simulated_devices():
  assert jax.device_count() == 8


def test_make_mesh_default_and_shapes():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.shape["data"] == 8
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 2)])
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}


@pytest.mark.parametrize("bad,msg", [
    ([("data", 3)], "needs 3 devices"),
    ([("data", -1), ("x", -1)], "at most one -1"),
    ([("data", -1), ("data", 2)], "repeated axis"),
    ([("data", -1), ("x", 3)], "not divisible by 3"),
])
def test_make_mesh_errors(bad, msg):
  with pytest.raises(ValueError, match=msg):
    sharding.make_mesh(bad)


def test_tree_names():
  tree = {"params": {"a": {"kernel": 1}}, "opt": (2, {"mu": 3})}
  assert tree_util.tree_names(tree) == ["opt/0", "opt/1/mu", "params/a/kernel"]


def test_fsdp_shards_largest_divisible_dim():
  mesh = sharding.make_mesh()
  tree = {"params": {"kernel": jax.ShapeDtypeStruct((12, 64), jnp.float32),
                     "odd": jax.ShapeDtypeStruct((3, 5), jnp.float32),
                     "bias": jax.ShapeDtypeStruct((64,), jnp.float32)},
          "step": jax.ShapeDtypeStruct((), jnp.int32)}
  sh = sharding.infer_shardings(
      tree, [(".*/bias", "replicate"), ("params/.*", "fsdp"),
             (".*", "replicate")], mesh)
  assert sh["params"]["kernel"].spec == P(None, "data")
  assert sh["params"]["odd"].spec == P()
  assert sh["params"]["bias"].spec == P()
  assert sh["step"].spec == P()
  small = sharding.infer_shardings(
      tree, [(".*", "fsdp(axis='data', min_size=1000)")], mesh)
  assert small["params"]["kernel"].spec == P()  # 768 elements < 1000.


def test_fsdp_over_several_axes_and_sharded_placement():
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 4)])
  x = jnp.arange(16 * 3, dtype=jnp.float32).reshape(16, 3)
  sh = sharding.infer_shardings({"w": x}, [(".*", "fsdp(axis='fsdp')")], mesh)
  assert sh["w"].spec == P("fsdp", None)
  placed = jax.device_put(x, sh["w"])
  assert placed.addressable_shards[0].data.shape == (4, 3)
  np.testing.assert_array_equal(np.asarray(placed), np.asarray(x))


def test_rule_errors():
  mesh = sharding.make_mesh()
  tree = {"w": jax.ShapeDtypeStruct((8,), jnp.float32)}
  with pytest.raises(ValueError, match="Unknown sharding rule 'shard'"):
    sharding.infer_shardings(tree, [(".*", "shard")], mesh)
  with pytest.raises(ValueError, match="No rule .* matches 'w'"):
    sharding.infer_shardings(tree, [("nothing", "replicate")], mesh)
  with pytest.raises(ValueError, match="not in the mesh axes"):
    sharding.infer_shardings(tree, [(".*", "fsdp(axis='model')")], mesh)


def test_batch_sharding_splits_leading_dim():
  mesh = sharding.make_mesh([("data", 4), ("fsdp", 2)])
  x = jax.device_put(np.zeros((16, 3)), sharding.batch_sharding(mesh))
  assert {s.data.shape for s in x.addressable_shards} == {(2, 3)}
