"""A small name -> object registry; one instance per kind of component.

Each kind (models, losses, evaluators, pp ops, datasets) has its own
`Registry`. Built-in components register themselves when their package is
imported; `get` imports that package on first use, so configs can name a
built-in without importing it. Components from outside the package register
the same way, from any module imported before `get` (e.g. by the config file),
or are named as `"some.module:name"`, which imports `some.module` first.
"""

import difflib
import importlib


class Registry:
  """Maps names to objects of one kind."""

  def __init__(self, kind, builtin_module=None):
    self.kind = kind
    self._builtin_module = builtin_module
    self._items = {}

  def register(self, name, obj=None):
    """Registers `obj` under `name`; used as a decorator when `obj` is None."""
    if obj is None:
      return lambda o: self.register(name, o)
    if name in self._items and self._items[name] is not obj:
      raise ValueError(f"{self.kind} {name!r} is already registered "
                       f"({self._items[name]!r}).")
    self._items[name] = obj
    return obj

  def _load_builtins(self):
    if self._builtin_module:
      importlib.import_module(self._builtin_module)

  def names(self):
    self._load_builtins()
    return sorted(self._items)

  def __contains__(self, name):
    self._load_builtins()
    return name in self._items

  def get(self, name):
    """Returns the object registered as `name` (or `module:name`)."""
    if ":" in name:
      module, name = name.split(":", 1)
      importlib.import_module(module)
    self._load_builtins()
    if name not in self._items:
      close = difflib.get_close_matches(name, self._items, n=3)
      hint = f" Did you mean {close}?" if close else ""
      raise KeyError(f"Unknown {self.kind} {name!r}.{hint} "
                     f"Known: {sorted(self._items)}.")
    return self._items[name]


MODELS = Registry("model", "big_vision_like.models")
LOSSES = Registry("loss", "big_vision_like.losses")
EVALUATORS = Registry("evaluator", "big_vision_like.evaluators")
PP_OPS = Registry("pp op", "big_vision_like.pp")
DATASETS = Registry("dataset", "big_vision_like.datasets")
