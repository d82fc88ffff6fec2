"""The life of a run that the single-model loop (training/loop.py) and the packed loop (scale/packed.py) share:
stop signals, log windows, the NaN guard, periodic work, saving, stopping, failing and finishing.

Both loops call these same pieces, so a fix lands once: each loop stays a plain `while step < steps` that reads
top to bottom, and what differs between them (one model or K stacked ones, torchrun's agreed stop) stays visible
in the loop itself.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import traceback

import numpy as np
import torch
from tqdm import tqdm

from betavae.checkpoints import save_checkpoint
from betavae.errors import CheckpointWriteError
from betavae.evaluation import metrics, validation
from betavae.pictures import plots, report, traversals
from betavae.training.run_folder import CsvLog

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
SAFE_LR = 1e-4  # the published default (Locatello et al. 2019): the NaN advice never suggests more


class StopNow(BaseException):
    """A second stop signal during the stop-and-save: leave at once (the atomic write keeps the old checkpoint)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def signal_name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


class StopSignals:
    """Ctrl-C, SIGTERM (Slurm, docker stop, timeout) and SIGHUP (a dropped SSH session) ask the loop to stop at the
    next step and save (`requested` holds the signal); a second one raises StopNow at once."""

    def __init__(self):
        self.requested: int | None = None
        self.previous = {}

    def __enter__(self) -> StopSignals:
        self.previous = {signum: signal.signal(signum, self.on_signal) for signum in STOP_SIGNALS}
        return self

    def on_signal(self, signum, frame) -> None:
        if self.requested is not None:
            raise StopNow(signum)
        self.requested = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class RunOutput:
    """One run folder while it trains: its one-line messages (stderr and run.log), log.csv and val.csv, and the
    checkpoint on disk. `lead=False` (torchrun ranks but 0) writes nothing and prints only errors."""

    def __init__(self, run_dir: str, resume_step: int | None, lead: bool = True, prefix: str = "", rank: int = 0):
        self.run_dir, self.lead, self.prefix, self.rank = run_dir, lead, prefix, rank
        self.checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
        self.saved_step = resume_step                       # the step of the checkpoint on disk
        where = (lambda name: os.path.join(run_dir, name)) if lead else (lambda name: os.devnull)
        self.text = open(where("run.log"), "a")
        self.log, self.val_log = CsvLog(where("log.csv"), resume_step), CsvLog(where("val.csv"), resume_step)

    def say(self, message: str) -> None:
        if not self.lead:
            if message.startswith("error"):
                print(f"rank {self.rank}: {message}", file=sys.stderr)
            return
        tqdm.write(self.prefix + message, file=sys.stderr)
        with contextlib.suppress(OSError, ValueError):      # a full disk must not hide the message itself
            self.text.write(message + "\n")
            self.text.flush()

    def write_checkpoint(self, state: dict) -> None:
        if self.lead:
            save_checkpoint(self.checkpoint_path, state)
            self.saved_step = state["step"]

    def on_disk(self) -> str:
        return (f"the checkpoint of step {self.saved_step} in {self.checkpoint_path} is intact"
                if self.saved_step is not None else "no checkpoint of this run was written")

    def close_logs(self) -> None:
        self.log.close()
        self.val_log.close()

    def close(self) -> None:
        self.close_logs()
        self.text.close()


class LogWindow:
    """The objective's terms summed on the device over a log window (no host sync per step), read at its end."""

    def __init__(self):
        self.totals, self.count = {}, 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            self.totals[name] = self.totals.get(name, 0) + value.detach()
        self.count += 1

    def close(self) -> dict[str, torch.Tensor]:
        means = {name: (total / self.count).cpu() for name, total in self.totals.items()}
        self.totals, self.count = {}, 0
        return means


def closes_window(step: int, params) -> bool:
    """Whether the step numbered `step` (counting from 1) ends a log window."""
    return step % params.log_every == 0 or step == params.steps


def log_row(step: int, means: dict[str, torch.Tensor]) -> dict:
    """log.csv's row: every scalar term, then the KL of each latent as kl_0, kl_1, ..."""
    row = {"step": step, **{name: round(value.item(), 6) for name, value in means.items() if value.dim() == 0}}
    row.update({f"kl_{i}": round(value, 6) for i, value in enumerate(means["kl_per_dim"].tolist())})
    return row


class NanGuard:
    """The fallback when the loss turns non-finite: a state whose loss was computed and found finite.

    `candidate` is taken before the step that ends a log window; when that window's mean loss is finite, that
    step's own loss (computed at exactly these weights, RNG and batch) was finite, so the candidate becomes
    `last_good`; resuming from it repeats that step."""

    def __init__(self, state: dict):
        self.last_good, self.candidate = state, None

    def before_step(self, step: int, params, snapshot) -> None:
        if closes_window(step + 1, params):
            self.candidate = snapshot()

    def window_was_finite(self, step: int) -> None:
        if self.candidate is not None and self.candidate["step"] == step - 1:
            self.last_good, self.candidate = self.candidate, None


def finite(means: dict[str, torch.Tensor]) -> bool:
    return math.isfinite(means["loss"].item())


def lower_lr(lr: float) -> str:
    """A tenth of `lr`, at most SAFE_LR, written as a user types it (0.00001, not 1e-05)."""
    return np.format_float_positional(min(lr / 10, SAFE_LR), trim="-")


def apply_optimizer_params(optimizer: torch.optim.Optimizer, lr: float, betas: tuple[float, float]) -> None:
    """Set lr and Adam's betas after load_state_dict, which brings back the saved ones: a resumed run trains with
    the values its params (and params.yaml) say."""
    for group in optimizer.param_groups:
        group["lr"], group["betas"] = lr, betas


def fixed_images(dataset, params) -> torch.Tensor:
    """The images of every picture of a run, drawn apart from the training stream: [traverse_samples, C, 64, 64]."""
    indices = torch.randint(len(dataset), (params.traverse_samples,),
                            generator=torch.Generator().manual_seed(params.seed + 1))
    return dataset.batch(indices)[0]


def save_pictures(model, x_fixed: torch.Tensor, out: RunOutput, step: int, dataset, params) -> None:
    if out.lead:
        traversals.save_all(model, x_fixed, out.run_dir, tag=f"_step{step:06d}", points=params.traverse_points,
                            dataset=dataset, params=params)


def save_state(model, state: dict, x_fixed: torch.Tensor, out: RunOutput, dataset, params) -> None:
    """Write `state` as the checkpoint and draw the pictures of its weights (loaded into `model`)."""
    out.write_checkpoint(state)
    if out.lead:
        model.load_state_dict(state["model"])
        save_pictures(model, x_fixed, out, state["step"], dataset, params)


def due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def work_due(step: int, params) -> bool:
    return (due(step, params.sample_every) or due(step, params.checkpoint_every) or due(step, params.eval_every)
            or step == params.steps)


def periodic_work(step: int, model, objective, x_fixed: torch.Tensor, out: RunOutput, dataset, params,
                  snapshot) -> None:
    """After a step: pictures, checkpoint, held-out loss and scores, each at its own cadence."""
    if due(step, params.sample_every) and step < params.steps and out.lead:  # the last step's: finish draws them
        was_training = model.training
        save_pictures(model, x_fixed, out, step, dataset, params)
        report.refresh(out.run_dir, params.active_kl)
        model.train(was_training)
    if due(step, params.checkpoint_every):
        out.write_checkpoint(snapshot())
    if (due(step, params.eval_every) or step == params.steps) and out.lead:
        validation.log_validation(model, objective, dataset, step, params, out.val_log)
    if params.metrics and due(step, params.eval_every) and step < params.steps and out.lead:
        metrics.record_run(model, dataset, out.run_dir, step, params, out.say)


def non_finite(out: RunOutput, step: int, guard: NanGuard, params, save) -> int:
    """The loss became NaN or infinite: save the last state whose loss was finite, advise a lower lr; exit 1."""
    save(guard.last_good)
    out.say(f"error: the loss became non-finite before step {step}; the last state with a finite loss (step "
            f"{guard.last_good['step']}) is saved in {out.checkpoint_path}: resume with a lower lr, e.g. python "
            f"main.py --resume {out.run_dir} --set lr={lower_lr(params.lr)}")
    return 1


def stopped(out: RunOutput, signum: int, step: int, save, state: dict) -> int:
    """A stop signal: save the current state with its pictures; exit 128 + the signal."""
    save(state)
    out.say(f"stopped by {signal_name(signum)} at step {step}; checkpoint and images saved; continue with: "
            f"python main.py --resume {out.run_dir}")
    return 128 + signum


def stopped_at_once(out: RunOutput, stop: StopNow, step: int) -> int:
    out.say(f"stopped at once by a second {signal_name(stop.signum)} at step {step}; {out.on_disk()}")
    return 128 + stop.signum


def failed(out: RunOutput, step: int, guard: NanGuard, save) -> int:
    """Inside an `except`: the step raised. Save the last good state, say so in one line (traceback in run.log)."""
    if isinstance(sys.exc_info()[1], CheckpointWriteError):
        out.say(f"error: {sys.exc_info()[1]}; {out.on_disk()}")
        return 1
    with contextlib.suppress(OSError, ValueError):
        out.text.write(traceback.format_exc())
    failure = traceback.format_exc().strip().splitlines()[-1]
    try:
        save(guard.last_good)
    except CheckpointWriteError as error:
        out.say(f"error: training failed at step {step} ({failure}) and {error}; {out.on_disk()}")
        return 1
    except StopNow as stop:
        out.say(f"error: training failed at step {step} ({failure}); stopped at once by {signal_name(stop.signum)} "
                f"while saving; {out.on_disk()}")
        return 128 + stop.signum
    out.say(f"error: training failed at step {step} ({failure}); the last good state (step "
            f"{guard.last_good['step']}) is saved in {out.checkpoint_path}; traceback in {out.run_dir}/run.log")
    return 1


def finish(model, state: dict, x_fixed: torch.Tensor, out: RunOutput, dataset, params, speed: str) -> int:
    """The end of a run: the last checkpoint and pictures, its scores, plots and report; exit 0 (1 when the
    checkpoint cannot be written)."""
    if not out.lead:
        return 0
    try:
        save_state(model, state, x_fixed, out, dataset, params)
    except CheckpointWriteError as error:
        out.say(f"error: training ended at step {state['step']} but {error}; {out.on_disk()}")
        return 1
    out.say(speed)
    if params.metrics:
        metrics.record_run(model, dataset, out.run_dir, state["step"], params, out.say)
    plots.plot_validation(out.run_dir)
    dataset.end_of_run_pictures(model, out.run_dir, params)  # each dataset's own (CelebA: attribute correlations)
    report.refresh(out.run_dir, params.active_kl)
    out.say(f"done: {state['step']} steps; outputs in {out.run_dir}")
    return 0
