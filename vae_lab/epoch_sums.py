"""An epoch's sums of the objective's terms, the loss and the example counts, per stage, kept on the device."""

import torch

FLUSH_EVERY = 64  # training steps whose sums wait to be reduced together (bounds the list, amortises the ops)


class EpochSums:
    """Per stage, the row [term sums..., loss * n, n counted, n not counted]: exact means across batches of any size
    and across DDP ranks (sum + count metrics), with no host sync.

    Training counts whole batches: a batch whose terms or loss are not finite is a skipped step, not counted.
    Evaluation counts examples, and the non-finite ones are reported (`val/nonfinite_examples`), never silently
    dropped. A training step only keeps (detached) its terms and loss, no op on the hot path; they are reduced
    together every FLUSH_EVERY steps and when the epoch's sums are read.
    """

    def __init__(self, terms: list[str]):
        self.terms = terms
        self.sums: dict[str, torch.Tensor] = {}
        # training steps not yet in sums["train"]: ([term (B,) per term], loss, batch size)
        self.pending: list[tuple[list[torch.Tensor], torch.Tensor, int]] = []

    def add(self, stage: str, out, batch_size: int) -> None:
        """One batch's ObjectiveOutput (`terms`: name -> (B,), `loss`: scalar) of `batch_size` examples."""
        if stage == "train":
            # no op here but the detaches: the rows are built when the pending steps are flushed
            self.pending.append(([out.terms[t].detach() for t in self.terms], out.loss.detach(), batch_size))
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
        pending, n, num_terms = self.pending, len(self.pending), len(self.terms)
        if len({len(terms[0]) for terms, _, _ in pending}) == 1:  # one batch size (all but an epoch's last batch)
            term_sums = torch.stack([t for terms, _, _ in pending for t in terms]).reshape(n, num_terms, -1).sum(-1)
        else:
            term_sums = torch.stack([torch.stack(terms).sum(-1) for terms, _, _ in pending])
        rows = torch.cat([term_sums, torch.stack([loss.reshape(()) for _, loss, _ in pending])[:, None]], 1)
        sizes = torch.tensor([size for _, _, size in pending], dtype=rows.dtype, device=rows.device)  # (n,)
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
