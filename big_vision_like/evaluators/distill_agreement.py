"""Student-teacher agreement over a split, for runs with `config.distill`.

  config.evals.agreement = dict(
      type="distill_agreement", data=dict(name="bvl_digits", split="test"),
      pp_fn="decode(channels=1)|resize(16)|value_range(-1, 1)|"
            'onehot(10, key="label", key_result="labels")',
      label_key="labels")  # optional: also both models' prec@1

`agreement` is the fraction of the split's examples (masked, each counted
once) where the argmax of the student's output is the argmax of the
teacher's. The teacher's params come from the train state
(`state["teacher"]`), through the trainer's `distill` predict function
(the default `pred` of this evaluator), which returns the outputs of both
models on the same batch.
"""

from big_vision_like.evaluators import common
from big_vision_like.evaluators.classification import topk_correct
from big_vision_like.losses.distillation import agreement
from big_vision_like.losses.distillation import select
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS


@EVALUATORS.register("distill_agreement")
class Evaluator:
  """Top-1 agreement of student and teacher (and, with labels, their prec@1).

  Args:
    predict_fn: the trainer's `distill` predict function:
      `(train_state, batch) -> (student outputs, teacher outputs)`.
    data: the split, dict(name=..., split=...).
    pp_fn: its pp string.
    batch_size: global batch size.
    mesh: the device mesh.
    student_output: the student's output compared ("logits", or e.g.
      "dist_logits" for DeiT's distillation head).
    teacher_output: the teacher's output compared.
    label_key: if set, the batch's labels (integer, one-hot or multi-hot):
      `student_prec@1` and `teacher_prec@1` are reported too.
    cache: keep the preprocessed split in memory.
  """

  default_pred = "distill"

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               student_output="logits", teacher_output="logits",
               label_key=None, cache=True):
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn),
                                batch_size, mesh, cache=cache)

    def per_example(train_state, batch):
      student, teacher = predict_fn(train_state, batch)
      s = select(student, student_output)  # [B, C]
      t = select(teacher, teacher_output, "teacher")  # [B, C]
      out = {"agreement": agreement(s, t)}
      if label_key is not None:
        out["student_prec@1"] = topk_correct(s, batch[label_key], 1)
        out["teacher_prec@1"] = topk_correct(t, batch[label_key], 1)
      return out

    self._means = common.MaskedMeans(per_example, mesh)

  def check_inputs(self, train_state):
    """Traces both models on abstract batches; raises on a mismatch."""
    self._means.eval_shape(train_state, self.data)

  def run(self, train_state):
    """Yields `agreement` (and `student_prec@1`, `teacher_prec@1`)."""
    yield from self._means(train_state, self.data).items()
