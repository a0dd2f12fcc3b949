"""Knowledge distillation: the student matches the teacher's softened distribution (KL) plus the task loss."""

from __future__ import annotations

from typing import Any

from .collate import IGNORE
from .config import TrainConfigError


def check_teacher(student: Any, teacher: Any) -> None:
    """Teacher and student must share the tokenizer (same vocabulary) and the model kind."""
    if teacher is None:
        raise TrainConfigError("method='distill' needs teacher=<a ModelHandle> (a larger model, same tokenizer)")
    if teacher.kind != student.kind:
        raise TrainConfigError(f"teacher is {teacher.kind} but the student is {student.kind}: use the same kind")
    if teacher.tokenizer.get_vocab() != student.tokenizer.get_vocab():
        raise TrainConfigError("teacher and student tokenizers differ: distillation compares token distributions, "
                               "so both must use the same tokenizer")


def distill_loss(student_logits: Any, teacher_logits: Any, labels: Any, task_loss: Any, *, temperature: float,
                 alpha: float, causal: bool) -> Any:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * task_loss`` over the positions with labels."""
    import torch.nn.functional as F

    if causal:  # position t predicts token t+1
        student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])  # padded embedding rows differ
    mask = labels != IGNORE
    s = student_logits[..., :vocab][mask].float() / temperature
    t = teacher_logits[..., :vocab][mask].float() / temperature
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    return alpha * temperature**2 * kl + (1.0 - alpha) * task_loss
