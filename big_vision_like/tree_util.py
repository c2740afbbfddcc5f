"""'/'-joined names of pytree leaves, the keys every regex rule matches."""

import jax


def _key_name(key):
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_name(path):
  """A `jax.tree_util` key path -> "a/b/0/c"."""
  return "/".join(_key_name(k) for k in path)


def tree_names(tree):
  """The '/'-joined names of `tree`'s leaves, in flattening order."""
  return [path_name(path)
          for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def flatten(tree):
  """{"a/b/c": leaf} of `tree` (a flat dict of such names passes through)."""
  return dict(zip(tree_names(tree), jax.tree.leaves(tree)))


def tree_map_with_names(fn, tree, *rest):
  """Like `jax.tree.map`, but calls `fn(name, leaf, *rest_leaves)`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x, *r: fn(path_name(path), x, *r), tree, *rest)
