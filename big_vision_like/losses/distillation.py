"""Distillation losses: a student's outputs against a frozen teacher's.

They live in their own registry, `DISTILL_LOSSES` (`config.distill.loss`),
not in `LOSSES` (`config.loss`): they take both models' outputs,
`fn(student, teacher, **loss_kw) -> (scalar, metrics)`, each what its
model's `apply` returns: `(logits, aux)` for a classifier,
`(zimg, ztxt, aux)` for a two-tower model. An output is chosen by name
(`select`): "logits", "zimg", "ztxt", or a key of `aux` (e.g. the DeiT
student's "dist_logits", a classifier's "pre_logits").
`big_vision_like/distill.py` combines one of them with the task loss.

- "kl": soft distillation, KL(p_teacher || p_student) of the softmaxes at
  temperature T, times T^2 (Hinton et al. 2015; with the teacher on the
  student's own augmented images and no label loss this is "function
  matching", Beyer et al. 2022). Summed over classes, averaged over
  examples (DeiT's soft loss divides by the classes too: the same gradient
  direction, C times smaller).
- "deit_hard": DeiT's hard distillation (Touvron et al. 2021): softmax
  cross-entropy of the student's distillation-token head
  (`aux["dist_logits"]`) against the teacher's argmax class.
- "embedding_cosine": 1 - cos(student embedding, teacher embedding), per
  named output (image and/or text embeddings of two-tower models), averaged.

Every loss here is a mean over examples (`example_mean`), so gradient
accumulation averages micro-batch gradients exactly.
"""

import functools

import jax
import jax.numpy as jnp

from big_vision_like.registry import Registry

DISTILL_LOSSES = Registry("distillation loss",
                          "big_vision_like.losses.distillation")


def select(outputs, name, who="student"):
  """The output `name` of a model's `apply` result (see the docstring)."""
  *heads, aux = outputs
  named = {"logits": 0} if len(heads) == 1 else {"zimg": 0, "ztxt": 1}
  if name in named:
    value = heads[named[name]]
  else:
    value = aux.get(name) if isinstance(aux, dict) else None
  if value is None:
    known = sorted(set(named) | set(aux or {}))
    hint = (" (the DeiT ViT's distillation head: set dist_token=True on the "
            "student)") if name == "dist_logits" else ""
    raise KeyError(f"The {who} has no output {name!r}{hint}; it has "
                   f"{known}.")
  return value


# Per-example formulas: [B, ...] arrays -> [B] losses.


def kl_divergence(student_logits, teacher_logits, temperature=1.0):
  """T^2 * KL(softmax(teacher / T) || softmax(student / T)), per example."""
  t = jnp.asarray(temperature, jnp.float32)
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
  return t * t * jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def hard_xent(student_logits, teacher_logits, label_smoothing=0.0):
  """Cross-entropy of the student against the teacher's argmax class."""
  c = student_logits.shape[-1]
  target = jax.nn.one_hot(jnp.argmax(teacher_logits, -1), c)
  if label_smoothing:
    target = target * (1.0 - label_smoothing) + label_smoothing / c
  return -jnp.sum(target * jax.nn.log_softmax(
      student_logits.astype(jnp.float32)), axis=-1)


def cosine_distance(student, teacher):
  """1 - cos(student_i, teacher_i) per example; [B, D] each (any scale)."""
  s, t = student.astype(jnp.float32), teacher.astype(jnp.float32)
  dot = jnp.sum(s * t, -1)
  norms = jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1)
  return 1.0 - dot / jnp.maximum(norms, 1e-12)


def agreement(student_logits, teacher_logits):
  """1.0 where the student's top-1 class is the teacher's, per example."""
  return (jnp.argmax(student_logits, -1) ==
          jnp.argmax(teacher_logits, -1)).astype(jnp.float32)


def _example_mean(fn):
  fn.example_mean = True
  return fn


# Registered objectives.


@DISTILL_LOSSES.register("kl")
@_example_mean
def kl_objective(student, teacher, *, temperature=1.0,
                 student_output="logits", teacher_output="logits"):
  """Mean `kl_divergence` of the two models' logits at `temperature`.

  `student_output="dist_logits"` distills through DeiT's distillation head
  (DeiT's soft distillation). Logs the batch's top-1 `teacher_agreement`.
  """
  if not temperature > 0:
    raise ValueError(f"config.distill.loss_kw.temperature={temperature!r}: "
                     "must be > 0.")
  s = select(student, student_output)
  t = select(teacher, teacher_output, "teacher")
  return (jnp.mean(kl_divergence(s, t, temperature)),
          {"teacher_agreement": jnp.mean(agreement(s, t))})


@DISTILL_LOSSES.register("deit_hard")
@_example_mean
def deit_hard_objective(student, teacher, *,
                        student_output="dist_logits",
                        teacher_output="logits", label_smoothing=0.0):
  """Mean `hard_xent` of the student's distillation head (DeiT)."""
  s = select(student, student_output)
  t = select(teacher, teacher_output, "teacher")
  return (jnp.mean(hard_xent(s, t, label_smoothing)),
          {"teacher_agreement": jnp.mean(agreement(s, t))})


@DISTILL_LOSSES.register("embedding_cosine")
@_example_mean
def embedding_cosine_objective(student, teacher, *, outputs=("zimg",),
                               teacher_outputs=None):
  """Mean over `outputs` of the mean `cosine_distance` of each pair.

  Args:
    student: the student's `apply` result.
    teacher: the teacher's.
    outputs: the student's outputs to match, e.g. ("zimg",) (image tower
      only) or ("zimg", "ztxt") (both towers of a two-tower model).
    teacher_outputs: the teacher's output for each (default: the same
      names), e.g. ("pre_logits",) for a classifier teacher.
  """
  names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
  theirs = names if teacher_outputs is None else (
      (teacher_outputs,) if isinstance(teacher_outputs, str)
      else tuple(teacher_outputs))
  if len(theirs) != len(names) or not names:
    raise ValueError(f"config.distill.loss_kw: outputs={names} and "
                     f"teacher_outputs={theirs} must pair up.")
  losses = {}
  for mine, other in zip(names, theirs):
    s = select(student, mine)
    t = select(teacher, other, "teacher")
    if s.shape != t.shape:
      raise ValueError(f"embedding_cosine: the student's {mine!r} "
                       f"{s.shape} and the teacher's {other!r} {t.shape} "
                       "differ in shape.")
    losses[mine] = jnp.mean(cosine_distance(s, t))
  total = functools.reduce(jnp.add, losses.values()) / len(losses)
  return total, {f"cosine_distance/{k}": v for k, v in losses.items()}
