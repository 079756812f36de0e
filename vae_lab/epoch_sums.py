"""An epoch's sums of the objective's terms, the loss and the example counts, per stage, kept on the device."""

import torch

FLUSH_EVERY = 64  # training steps whose sums wait to be reduced together (bounds the list, amortises the ops)


class EpochSums:
    """Per stage, the row [term sums..., loss * n, n counted, n not counted]: exact means across batches of any size
    and across DDP ranks (sum + count metrics), with no host sync.

    Training counts whole batches: a batch whose terms or loss are not finite is a skipped step, not counted.
    Evaluation counts examples, and the non-finite ones are reported (`val/nonfinite_examples`), never silently
    dropped. A training step only keeps the batch's term sums and loss (three small ops on the hot path); they
    are reduced together every FLUSH_EVERY steps and when the epoch's sums are read.
    """

    def __init__(self, terms: list[str]):
        self.terms = terms
        self.sums: dict[str, torch.Tensor] = {}
        self.pending: list[tuple[torch.Tensor, int]] = []  # training steps not yet in sums["train"]

    def add(self, stage: str, out, batch_size: int) -> None:
        """One batch's ObjectiveOutput (`terms`: name -> (B,), `loss`: scalar) of `batch_size` examples."""
        if stage == "train":
            with torch.no_grad():
                terms = torch.stack([out.terms[t] for t in self.terms]).sum(-1)  # (T,)
                self.pending.append((torch.cat([terms, out.loss.reshape(1)]), batch_size))
            if len(self.pending) >= FLUSH_EVERY:
                self.flush()
            return
        terms = torch.stack([out.terms[t] for t in self.terms]).detach()  # (T, B)
        finite = terms.isfinite().all(0)  # (B,)
        count = finite.sum().to(terms.dtype).reshape(1)
        sums = torch.where(finite, terms, 0.0).sum(-1)  # (T,)
        loss = out.loss.detach().reshape(1)
        loss_sum = torch.where(loss.isfinite(), loss * count, 0.0)
        self._add(stage, torch.cat([sums, loss_sum, count, batch_size - count]))

    def flush(self) -> None:
        """The pending training steps into the training sums: a step counts when its term sums and loss are finite
        (a sum is finite exactly when every element is, barring float32 overflow of nats-sized values)."""
        if not self.pending:
            return
        rows = torch.stack([row for row, _ in self.pending])  # (n, T + 1): term sums, loss
        sizes = torch.tensor([n for _, n in self.pending], dtype=rows.dtype, device=rows.device)  # (n,)
        self.pending = []
        finite = rows.isfinite().all(1)  # (n,)
        count = torch.where(finite, sizes, 0.0)
        sums = torch.where(finite[:, None], rows[:, :-1], 0.0).sum(0)  # (T,)
        loss_sum = torch.where(finite, rows[:, -1] * count, 0.0).sum()
        self._add("train", torch.cat([sums, loss_sum.reshape(1), count.sum().reshape(1),
                                      (sizes - count).sum().reshape(1)]))

    def _add(self, stage: str, row: torch.Tensor) -> None:
        self.sums[stage] = row if stage not in self.sums else self.sums[stage].add_(row)

    def pop(self, stage: str) -> torch.Tensor | None:
        """The stage's row for this epoch (None if it saw no batch), and a fresh start for the next."""
        if stage == "train":
            self.flush()
        return self.sums.pop(stage, None)
