"""Builds a preprocessing function from a big_vision-style pp string.

    decode|resize(16)|value_range(-1, 1)|onehot(10, key_result="labels")

Ops are separated by `|`; each is `name` or `name(args)` with Python literal
arguments, positional and keyword. `name` is looked up in `registry.PP_OPS`,
whose entries are factories: `factory(*args, **kwargs) -> fn(data) -> data`.

Arguments are checked when the string is built: `get_preprocess_fn` raises a
ValueError naming the op, the argument and the pp string for an unknown op
or keyword, a missing or extra argument, or a value the op's factory rejects
(e.g. `resize(0)`, `resize(16, 16)`: the second argument is `method`), before
any data flows.

Randomness: each example may carry `_seed` (an int64 stateless seed, shape
[2], added by the input pipeline). Before calling op number `i`, the builder
sets `data["_rng"]` to a seed folded from `_seed` and `i`, so each op of the
string draws its own, reproducible numbers; `_seed` and `_rng` are removed
from the result. Without `_seed` (e.g. eager use) there is no `_rng`, and each
random op draws a fresh seed (`utils.get_rng`), so deterministic pipelines
contain no stateful op.
"""

import ast
import inspect

from absl import logging
import tensorflow as tf

from big_vision_like import registry
from big_vision_like.pp import utils


def split_ops(pp_pipeline):
  """Splits a pp string on the `|` that are outside brackets and quotes."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(pp_pipeline):
    if quote:
      if ch == quote and pp_pipeline[i - 1] != "\\":
        quote = None
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "|" and depth == 0:
      parts.append(pp_pipeline[start:i])
      start = i + 1
  parts.append(pp_pipeline[start:])
  return [p.strip() for p in parts if p.strip()]


def parse_op(spec, pp_pipeline=""):
  """Parses `name` or `name(args)` into (name, args tuple, kwargs dict)."""
  where = f"in pp string {pp_pipeline!r}"
  try:
    node = ast.parse(spec, mode="eval").body
  except SyntaxError as e:
    raise ValueError(
        f"pp op {spec!r}: syntax error ({e.msg}) {where}") from None
  if isinstance(node, ast.Name):
    return node.id, (), {}
  if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
    raise ValueError(f"pp op {spec!r} is not `name` or `name(args)` {where}")
  name = node.func.id
  args = tuple(_literal(name, a, where) for a in node.args)
  kwargs = {}
  for kw in node.keywords:
    if kw.arg is None:
      raise ValueError(
          f"pp op {name!r}: `**` arguments are not allowed {where}")
    kwargs[kw.arg] = _literal(name, kw.value, where, kw.arg)
  return name, args, kwargs


def _literal(name, node, where, arg_name=None):
  try:
    return ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    label = f"{arg_name}={ast.unparse(node)}" if arg_name else ast.unparse(node)
    raise ValueError(f"pp op {name!r}: argument {label!r} is not a Python "
                     f"literal {where}") from None


def _make_op(spec, pp_pipeline):
  """Returns (name, op) for one op of the pp string."""
  name, args, kwargs = parse_op(spec, pp_pipeline)
  where = f"in pp string {pp_pipeline!r}"
  try:
    factory = registry.PP_OPS.get(name)
  except KeyError as e:  # The registry's message, minus its first sentence.
    hint = e.args[0].removeprefix(f"Unknown pp op {name!r}.").strip()
    raise ValueError(f"Unknown pp op {name!r} {where}. {hint}") from None
  sig = inspect.signature(factory)
  try:
    _check_keywords(sig, kwargs)
    sig.bind(*args, **kwargs)
  except TypeError as e:
    raise ValueError(f"pp op {name!r}: bad arguments in {spec!r}: {e} "
                     f"(signature {name}{sig}) {where}") from None
  try:
    return name, factory(*args, **kwargs)
  except utils.ArgumentError as e:
    raise ValueError(f"pp op {name!r}: {e.detail} (op {spec!r} {where})"
                     ) from None
  except (TypeError, ValueError) as e:
    raise ValueError(f"pp op {name!r}: bad arguments in {spec!r}: {e} "
                     f"{where}") from e


def _check_keywords(sig, kwargs):
  """Names an unknown keyword first (`bind` would report a missing one)."""
  params = sig.parameters.values()
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
    return
  names = {p.name for p in params
           if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
  unknown = [k for k in kwargs if k not in names]
  if unknown:
    raise TypeError(f"unexpected keyword argument {unknown[0]!r}")


def get_preprocess_fn(pp_pipeline, log_data=False):
  """Returns `fn(features) -> features` running the ops of `pp_pipeline`.

  Args:
    pp_pipeline: the pp string, e.g. "decode|resize(16)|value_range(-1, 1)";
      an empty string (or None) gives the identity (minus `_seed`).
    log_data: log the features before and after preprocessing (at trace time
      inside tf.data).

  Returns:
    A function of a dict of tensors, usable eagerly and in `tf.data.map`.
  """
  ops = [_make_op(spec, pp_pipeline) for spec in split_ops(pp_pipeline or "")]

  def preprocess(data):
    data = dict(data)
    if log_data:
      logging.info("Data before pre-processing (%s):\n%s", pp_pipeline, data)
    seed = data.pop(utils.SEED_KEY, None)
    for i, (_, op) in enumerate(ops):
      if seed is not None:
        data[utils.RNG_KEY] = tf.random.experimental.stateless_fold_in(seed, i)
      data = dict(op(data))
    data.pop(utils.RNG_KEY, None)
    if log_data:
      logging.info("Data after pre-processing:\n%s", data)
    return data

  # Every registered op is TF graph code (tests/pp/test_graph_mode.py):
  # AutoGraph's source conversion of the whole op chain would only slow the
  # tracing of each pipeline down (about 1 s per training run here).
  return tf.autograph.experimental.do_not_convert(preprocess)
