"""The LightningModule: one shared step for train/val/test, optimizers, logging. Orchestration only."""

import math
import sys
import warnings

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from vae_lab import lightning_compat
from vae_lab.call_hooks import per_call_hooks_note
from vae_lab.data.batches import stream_seed
from vae_lab.direct_step import DirectStep, lightning_to_device
from vae_lab.epoch_sums import EpochSums
from vae_lab.errors import ConfigError
from vae_lab.metrics import ReconstructionQuality, bits_per_dim, ssim_skip_reason
from vae_lab.model import build_model
from vae_lab.nets.discriminator import Discriminator
from vae_lab.objectives import NO_RATE_WEIGHT, build_objective, objective_named
from vae_lab.objectives.factor_vae import discriminator_loss, permute_dims
from vae_lab.schedules import build_scheduler, kl_cyclical_factor, kl_warmup_factor
from vae_lab.units import likelihood_status

STAGES = ("train", "val", "test")
# Steps per call pull their batches through Lightning's `dataloader_iter` flavour, which warns on every fit that it is
# experimental and that hooks see the last batch consumed: known and covered (tests/integration/test_steps_per_call.py).
for _pattern, _ in lightning_compat.DATALOADER_ITER_WARNINGS:
    warnings.filterwarnings("ignore", message=_pattern)


class VAEModule(L.LightningModule):
    """Trains a model of any family (vae_lab.model) on an objective, through the family's terms.

    Every init arg is a primitive (dicts of numbers and strings), so checkpoints load with weights_only=True.

    Args:
        model: init args of the model: `family` (absent: vae) and that family's init args.
        objective: `name` (objectives.OBJECTIVES), `num_samples` (z samples per example), the objective's
            coefficients, and for adversarial objectives (factor_vae) `discriminator`: hidden, layers, lr, betas.
        binary_data, dequantize: what the pixels are (DataSpec.binary, dataset.dequantize), which decides whether
            the bound is a normalised log-likelihood (vae_lab.units) and so whether bits/dim is logged.
        optimizer: a Hydra config with `_target_` (e.g. torch.optim.AdamW) and its arguments, minus `params`.
        scheduler: `name` in schedules.SCHEDULERS and its arguments, or None for a constant learning rate.
        kl_warmup_steps: linear KL warm-up length in optimizer steps (0: none).
        kl_warmup_epochs: the same in epochs (converted to steps at the start of training); used if > 0.
        kl_annealing: "linear" (the warm-up above) or "cyclical" (Fu et al. 2019: kl_cycles, kl_cycle_ratio).
        gradient_clip_val, gradient_clip_algorithm: clipping done here under manual optimisation (factor_vae,
            steps_per_call > 1), where Lightning refuses Trainer(gradient_clip_val=...); build.py moves it here.
        steps_per_call: optimizer steps per Lightning training_step (see `_training_call`); 1: Lightning's own loop.

    Optimisation is Lightning's automatic one (one optimizer), except for adversarial objectives and
    steps_per_call > 1: the optimizers are stepped by hand in training_step (Lightning 2.x needs manual optimisation
    for more than one optimizer), with precision, clipping, the LR schedule and the non-finite guard kept.
    """

    def __init__(
        self,
        model: dict,
        objective: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        kl_warmup_steps: int = 0,
        kl_warmup_epochs: float = 0.0,
        kl_annealing: str = "linear",
        kl_cycles: int = 4,
        kl_cycle_ratio: float = 0.5,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        binary_data: bool = False,
        dequantize: str = "none",
        steps_per_call: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model)
        objective = dict(objective)
        self.spec = objective_named(objective["name"])
        self.num_samples = int(objective.pop("num_samples", 1))
        disc = objective.pop("discriminator", None)
        self.objective = build_objective(**objective)
        self.kl_warmup_steps = kl_warmup_steps
        self.kl_total_steps = 1  # the run's length in optimizer steps, for cyclical annealing (set at fit start)
        # term -> unit suffix of its metric name (val/elbo_nats, train/dip_penalty, val/rate_nats/group_03)
        self.units = {"elbo": "_nats", "distortion": "_nats", "rate": "_nats", **self.spec.terms,
                      **self.model.aux_units}
        groups = self.model.latent_groups()
        self.group_terms = [f"rate_nats/{g.name}" for g in groups] if len(groups) > 1 else []  # one group: its rate
        self.units.update({name: "" for name in self.group_terms})
        self.terms = list(self.units)
        self.discriminator = None
        self.steps_per_call = int(steps_per_call)
        if self.steps_per_call > 1:
            # Lightning's documented `training_step(dataloader_iter)` flavour, chosen per instance: the step pulls
            # its own batches, so the data's resume position counts exactly the batches trained on.
            self.automatic_optimization = False
            self.training_step = self._training_call
        if self.spec.discriminator:
            self.automatic_optimization = False
            self.disc_options = {"hidden": 1000, "layers": 6, "lr": 1e-4, "betas": [0.5, 0.9], **(disc or {})}
            self.discriminator = Discriminator(self.model.latent_dim, int(self.disc_options["hidden"]),
                                               int(self.disc_options["layers"]))
        self.status = likelihood_status(self.model.likelihood.name, binary_data, dequantize,
                                        self.model.likelihood_levels)
        # bits/dim only of a normalised log-likelihood: nothing called bits_per_dim otherwise
        reported = self.terms + (["bits_per_dim"] if self.status.normalised else []) + ["loss"]
        # sum + count states: exact means across batches of any size and across DDP ranks
        # keyed "<stage>_metrics": a ModuleDict key may not shadow nn.Module.train
        self.means = nn.ModuleDict(
            {f"{s}_metrics": nn.ModuleDict({t: MeanMetric() for t in reported}) for s in STAGES}
        )
        # SSIM / PSNR of posterior-mean reconstructions, validation and test only (one extra decoder pass)
        self.quality = nn.ModuleDict({s: ReconstructionQuality() for s in ("val", "test")})
        self._ssim_noted = False  # images too small for SSIM: said once per run
        self.sums = EpochSums(self.terms)  # per stage: this epoch's sums of the terms, loss and counts
        self._direct: DirectStep | None = None  # manual optimisation's step without Lightning's dispatch, per fit
        self._call_batch_hooks: list = []  # callbacks' on_call_batch, per fit

    @property
    def kl_weight(self) -> float:
        if self.hparams.get("kl_annealing", "linear") == "cyclical":
            h = self.hparams
            return kl_cyclical_factor(self.global_step, self.kl_total_steps, h.kl_cycles, h.kl_cycle_ratio)
        return kl_warmup_factor(self.global_step, self.kl_warmup_steps)

    def rate_weight(self, warmup_factor: float) -> float:
        """The weight on the rate in the loss: its coefficient (beta) x the KL annealing factor (0 for IWAE)."""
        key = self.spec.rate_coefficient
        if key == NO_RATE_WEIGHT:
            return 0.0
        return (float(self.hparams.objective.get(key, 1.0)) if key else 1.0) * warmup_factor

    def setup(self, stage: str) -> None:
        # A VampPrior with prior.init=data takes K training images as pseudo-inputs, unless weights were loaded
        # into it (artifact, init_from). setup runs before Lightning restores a checkpoint, which then wins.
        prior = getattr(self.model, "prior_module", None)
        datamodule = self.trainer.datamodule
        if stage == "fit" and getattr(prior, "pending_data_init", False) and datamodule is not None:
            needed, images = prior.pseudo_inputs.shape[0], []
            for x, _ in datamodule.train_dataloader():
                images.append(x)
                if sum(len(t) for t in images) >= needed:
                    break
            prior.init_from_data(torch.cat(images)[:needed])

    def on_fit_start(self) -> None:
        if not self.status.normalised:
            rank_zero_warn(f"the ELBO of this run is not a normalised log-likelihood: {self.status.note}")
        epochs = self.hparams.kl_warmup_epochs
        if epochs and epochs > 0:
            self.kl_warmup_steps = int(round(epochs * self.trainer.num_training_batches))
        if self.hparams.get("kl_annealing", "linear") == "cyclical":
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ConfigError("schedule.kl_annealing=cyclical needs a run of known length: set "
                                  "trainer.max_steps or trainer.max_epochs")
            self.kl_total_steps = max(1, int(total))
        note = per_call_hooks_note(self.trainer.callbacks, self.steps_per_call)
        if note:
            rank_zero_warn(note)

    def on_train_start(self) -> None:
        if not self.automatic_optimization:  # the private Lightning names the fast path uses, checked once per fit
            lightning_compat.check(self.trainer, lightning_compat.FAST,
                                   off_switch="schedule.steps_per_call=1" if self.discriminator is None else None)
        # Manual optimisation (steps_per_call > 1, adversarial objectives): Lightning's per-step route resolved once,
        # where it would do nothing more (one device, no loss scaler, no profiler); else None and Lightning's route.
        self._direct = None if self.automatic_optimization else DirectStep.for_module(self)
        # the callbacks' per-step batch hooks under steps per call (the non-finite guard's NaN injection), found once
        self._call_batch_hooks = [cb.on_call_batch for cb in self.trainer.callbacks if hasattr(cb, "on_call_batch")]

    def _backward(self, loss: torch.Tensor) -> None:
        if self._direct is None:
            self.manual_backward(loss)  # precision plugin: fp16 loss scaling; DDP: gradient all-reduce
        else:
            self._direct.backward(loss)

    def _step_optimizer(self, optimizer, counted: bool = True) -> None:
        """optimizer (a LightningOptimizer) steps; counted: as the global step (the VAE's), else not (discriminator)."""
        if self._direct is not None:
            self._direct.step(optimizer.optimizer, counted)
        elif counted:
            optimizer.step()  # counts the global step; runs on_before_optimizer_step (guard, then clipping)
        else:
            # Through the strategy, not optimizer.step(): the precision plugin (scaling, guard and clipping hooks)
            # runs, but Lightning's step counter does not, so global_step, max_steps and schedules count VAE steps.
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, y)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, batch_idx: int = 0,
              codes: list | None = None) -> torch.Tensor:
        """The loss of one batch; its metrics accumulated and logged. `codes` receives z when given (a list)."""
        x, y = batch
        y = self.model.labels(y)
        # Fixed evaluation noise: the same z every epoch (validation curves and the best checkpoint follow the
        # model, not Monte Carlo noise), validation never shifts the training random stream, and a DDP
        # evaluation can be replayed shard by shard in one process (tests/cli/test_ddp.py).
        seed = None if stage == "train" else stream_seed(stage, self.global_rank, batch_idx)
        t = self.model.terms(x, y, self.num_samples, seed=seed, with_log_q=self.spec.log_q)
        kl_weight = self.kl_weight
        extra = {}
        if self.discriminator is not None:
            extra["density_ratio_logit"] = self.discriminator.log_density_ratio(t.z[0])  # (B,)
        out = self.objective(t, kl_weight=kl_weight, step=self.global_step, **extra)
        if codes is not None:
            codes.append(t.z[0])
        for g, name in enumerate(self.group_terms):
            out.terms[name] = t.rate[:, g]  # (B,) per latent group: they sum to `rate`
        out.terms.update(t.aux_terms)

        self.sums.add(stage, out, x.shape[0])
        if stage in self.quality:
            self._log_reconstruction(t.reconstruction(), x, stage)
        if stage == "train" and self._log_this_step():
            # CPU values: the progress bar reads its metrics after every batch, a device tensor would sync each time
            self.log("train/loss", out.loss.detach().cpu(), on_step=True, on_epoch=False, prog_bar=True, batch_size=1)
            # batch_size: Lightning asks for it under steps_per_call > 1 (the dataloader_iter flavour); a step value
            # is not averaged, so any number does
            # the weight actually applied to the rate: beta x warm-up factor (IWAE has no separate rate term)
            self.log("train/kl_weight", torch.tensor(self.rate_weight(kl_weight)), on_step=True, on_epoch=False,
                     batch_size=1)
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step applies (schedulers step after)
            self.log("train/lr", torch.tensor(lr), on_step=True, on_epoch=False, batch_size=1)
        return out.loss

    def _log_this_step(self) -> bool:
        """Whether Lightning writes step metrics after this step (every log_every_n_steps): each self.log costs."""
        every = self.trainer.log_every_n_steps
        return bool(self.trainer.fast_dev_run) or (every > 0 and (self.global_step + 1) % every == 0)

    def _log_epoch(self, stage: str) -> None:
        """The epoch means as sum + count metrics (DDP reduces sums and counts exactly, not means of rank means)."""
        sums = self.sums.pop(stage)
        if sums is None:
            return
        metrics, count, nonfinite = self.means[f"{stage}_metrics"], sums[-2], sums[-1]
        means = dict(zip([*self.terms, "loss"], sums[:-2] / count.clamp(min=1)))
        if stage != "train":
            self.log(f"{stage}/nonfinite_examples", nonfinite, on_step=False, on_epoch=True, reduce_fx="sum",
                     sync_dist=True)
            if float(nonfinite) > 0:  # one host sync per evaluation epoch
                rank_zero_warn(f"{int(nonfinite)} {stage} example(s) had a non-finite ELBO term and are left out of "
                               f"{stage}/elbo_nats ({stage}/nonfinite_examples): check the data for NaN/inf and the "
                               "likelihood's scale floor")
        if self.status.normalised:
            # bits/dim is affine in the bound, so the mean of bits/dim is bits/dim of the mean bound
            bound = means.get("iwae", means["elbo"])
            means["bits_per_dim"] = bits_per_dim(bound, math.prod(self.model.in_shape), self.status.log_bin_width)
        for name, mean in means.items():
            if stage == "train" and name == "loss":
                continue  # train/loss is the step value
            metrics[name].update(mean, weight=count)
            key = f"{stage}/{name}{self.units.get(name, '')}"  # val/elbo_nats, val/bits_per_dim, train/dip_penalty
            self.log(key, metrics[name], on_step=False, on_epoch=True, prog_bar=(name == "elbo" and stage == "val"),
                     batch_size=1)  # a weighted metric object: batch_size unused (required by dataloader_iter)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_reconstruction(self, x_hat: torch.Tensor, x: torch.Tensor, stage: str) -> None:
        self.quality[stage].update(x_hat, x)
        skipped = ssim_skip_reason(*x.shape[-2:])
        if skipped and not self._ssim_noted and self.global_rank == 0:
            self._ssim_noted = True
            print(f"note: {skipped}", file=sys.stderr, flush=True)
        for name, metric in self.quality[stage].items():  # val/ssim, val/psnr_db, test/... (those with data)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            return self._step(batch, "train")
        return self._adversarial_step(batch)

    def _training_call(self, dataloader_iter) -> None:
        """Up to steps_per_call optimizer steps on consecutive batches: Lightning's per-step cost paid once per call.

        A call ends after a step whose count (global_step) is a multiple of steps_per_call or of log_every_n_steps,
        at the end of the epoch and at max_steps; so step-based checkpoints (every_n_train_steps, a multiple of
        steps_per_call) and step metrics fall where they do with steps_per_call=1, with the same values.
        """
        taken = 0
        while taken < self.steps_per_call:
            try:
                batch, _, _ = next(dataloader_iter)
            except StopIteration:  # the epoch's last batch was taken by the previous call
                break
            batch = lightning_to_device(self.trainer, batch) if self._direct is None else self._direct.to_device(batch)
            for hook in self._call_batch_hooks:
                hook(self.trainer, self, batch)
            if self.discriminator is None:
                self._optimizer_step(batch)
            else:
                self._adversarial_step(batch)
            taken += 1
            if self._call_ends():
                break
        # Lightning counts one logged step per call: count optimizer steps instead, so the loggers' x axis and
        # log_every_n_steps are in optimizer steps as with steps_per_call=1 (Lightning adds the call's own 1).
        lightning_compat.add_batches_that_stepped(self.trainer, taken - 1)

    def _optimizer_step(self, batch) -> None:
        """One step as Lightning's automatic optimisation takes it: forward, zero_grad, backward, step, schedulers."""
        optimizer = self.optimizers()
        loss = self._step(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._step_optimizer(optimizer)  # runs on_before_optimizer_step (guard, then clipping)
        for scheduler in self._schedulers():
            scheduler.step()

    def _call_ends(self) -> bool:
        step, trainer = self.global_step, self.trainer
        every = trainer.log_every_n_steps
        return (step % self.steps_per_call == 0 or (every > 0 and step % every == 0)
                or 0 <= trainer.max_steps <= step)

    def _adversarial_step(self, batch) -> torch.Tensor:
        """One VAE step, then one discriminator step on the same codes (Kim & Mnih 2018, Alg. 1)."""
        vae_opt, disc_opt = self.optimizers()
        codes: list[torch.Tensor] = []
        loss = self._step(batch, "train", codes=codes)
        z = codes[0].detach()  # (B, D): the codes before this VAE update, as in the paper's algorithm
        disc_loss, accuracy = discriminator_loss(self.discriminator(z), self.discriminator(permute_dims(z)))
        if self._log_this_step():
            # Logged next to train/loss, before any hook logs: in an epoch's first call Lightning drops a hook's
            # values when another hook (the guard's on_before_optimizer_step) logged in between.
            self.log("train/disc_loss", disc_loss.detach().cpu(), on_step=True, on_epoch=False, batch_size=1)
            self.log("train/disc_accuracy", accuracy.detach().cpu(), on_step=True, on_epoch=False, batch_size=1)
        vae_opt.zero_grad(set_to_none=True)
        self._backward(loss)
        self._step_optimizer(vae_opt)  # counts as the global step; runs on_before_optimizer_step (guard, clipping)
        for scheduler in self._schedulers():
            scheduler.step()

        disc_opt.zero_grad(set_to_none=True)  # also drops what the VAE's loss put into the discriminator's grads
        self._backward(disc_loss)
        self._step_optimizer(disc_opt, counted=False)  # hooks and precision as for the VAE, global_step unchanged
        return loss

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        return [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]

    def on_before_optimizer_step(self, optimizer) -> None:
        # Under manual optimisation Lightning does not clip; here it runs where it would (after AMP unscaling and
        # the non-finite guard's check), for both optimizers.
        if not self.automatic_optimization and self.hparams.get("gradient_clip_val"):
            self.clip_gradients(optimizer, self.hparams.gradient_clip_val, self.hparams.gradient_clip_algorithm)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", batch_idx)

    def configure_optimizers(self):
        # _convert_="all": plain lists, not OmegaConf's ListConfig, in the optimizer's param groups (Adamax keeps
        # `betas` as given, and a ListConfig there makes the checkpoint unreadable with weights_only=True)
        params = self.parameters() if self.discriminator is None else self.model.parameters()
        optimizer = instantiate(self.hparams.optimizer, params=params, _convert_="all")
        if not self.hparams.scheduler:
            scheduler = None
        else:
            scheduler = build_scheduler(optimizer, total_steps=int(self.trainer.estimated_stepping_batches),
                                        **self.hparams.scheduler)
        if self.discriminator is None:
            if scheduler is None:
                return optimizer
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        disc = self.disc_options
        disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=float(disc["lr"]), betas=tuple(disc["betas"]))
        return [optimizer, disc_opt], [] if scheduler is None else [{"scheduler": scheduler, "interval": "step"}]
