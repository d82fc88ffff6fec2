"""The training loop of one model, written out: batch → forward → loss → backward → step → log, then periodic work."""
from __future__ import annotations

import dataclasses
import os
import time

import torch
from tqdm import tqdm

from betavae import checkpoints, parts
from betavae.scale import ddp
from betavae.speed import switches
from betavae.training import lifecycle
from params import Params

START = time.perf_counter()  # replaced by main.py with its own start, to report the time to the first step honestly
SINCE = "after start (imports included)"  # what START is; a sweep point's own start says so


def train_step(model, optimizer, objective, x: torch.Tensor, step: int, params: Params) -> dict[str, torch.Tensor]:
    """One optimiser step on batch x; returns the objective's terms (tensors, not yet read by the host)."""
    x = switches.to_memory_format(x, params)
    with switches.autocast(x, params):             # the forward in bf16 when amp is on; the loss in float32
        x_logits, mu, logvar, z = model(x)
    x_logits, mu, logvar, z = x_logits.float(), mu.float(), logvar.float(), z.float()
    terms = objective(x, x_logits, mu, logvar, z, step, params)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    after_step = getattr(objective, "after_step", None)  # a stateful objective's own update, e.g. a discriminator
    if after_step is not None:
        terms.update(after_step())
    return terms


def rng_state(index_generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "index": index_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, index_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    index_generator.set_state(state["index"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def setup(params: Params, dataset, device: torch.device, checkpoint: dict | None, settings: dict | None, say):
    """The model (speed settings applied), its Adam, the objective and the batch stream, restored from `checkpoint`
    when resuming (lr and Adam's betas then come from `params`, not from the checkpoint)."""
    chosen = {}

    def prepare(model):  # threads, memory format, kernels, compile; then Adam's fused kernel when chosen
        chosen.update(switches.prepare(model, params, device, settings, say))
        return switches.adam_options(chosen)
    model, optimizer, objective = parts.build(params, dataset.channels, len(dataset), device, prepare)
    betas = (params.adam_beta1, params.adam_beta2)
    index_generator = torch.Generator().manual_seed(params.seed)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lifecycle.apply_optimizer_params(optimizer, params.lr, betas)
        if "objective" in checkpoint:                       # a stateful objective's networks and optimiser
            objective.load_state_dict(checkpoint["objective"])
        restore_rng(checkpoint["rng"], index_generator)
    return model, optimizer, objective, index_generator


def checkpoint_state(model, optimizer, objective, index_generator, step: int, params: Params, channels: int) -> dict:
    """Everything a resume needs, copied: weights, Adam, the objective's own state, RNG streams, params, shape."""
    return checkpoints.layout(model.state_dict(), optimizer.state_dict(), step, rng_state(index_generator),
                              dataclasses.asdict(params), channels, params.latent_dim,
                              objective.state_dict() if hasattr(objective, "state_dict") else None)


def train(params: Params, dataset, run_dir: str, device: torch.device, checkpoint: dict | None = None,
          settings: dict | None = None) -> int:
    """Train one model in run_dir (from `checkpoint` when resuming) and return the exit code; `settings`:
    switches.resolve's, None resolves. Under torchrun only rank 0 writes files and prints."""
    lead, world, rank = ddp.rank() == 0, ddp.world_size(), ddp.rank()
    step = checkpoint["step"] if checkpoint is not None else 0
    out = lifecycle.RunOutput(run_dir, step if checkpoint is not None else None, lead, rank=rank)
    model, optimizer, objective, index_generator = setup(params, dataset, device, checkpoint, settings, out.say)
    x_fixed = lifecycle.fixed_images(dataset, params)
    step_model = ddp.wrap(model, device)  # DDP under torchrun: same weights on every rank, gradients averaged
    if not lead:  # its own reparameterisation noise, deterministic; rank 0 keeps the single-process stream
        torch.manual_seed(params.seed + 1_000_003 * rank + step)

    def snapshot() -> dict:
        return checkpoint_state(model, optimizer, objective, index_generator, step, params, dataset.channels)

    def save(state: dict) -> None:
        lifecycle.save_state(model, state, x_fixed, out, dataset, params)

    guard, window = lifecycle.NanGuard(snapshot()), lifecycle.LogWindow()
    bar = tqdm(total=params.steps, initial=step, desc=os.path.basename(run_dir), dynamic_ncols=True,
               smoothing=0.05, disable=not lead)
    model.train()
    loop_start, first_step = time.perf_counter(), step
    with lifecycle.StopSignals() as signals:
        try:
            while step < params.steps:
                guard.before_step(step, params, snapshot)
                indices = torch.randint(len(dataset), (params.batch_size,), generator=index_generator)
                x, _ = dataset.batch(indices[rank::world])  # this rank's share of the batch: [B / world, C, 64, 64]
                window.add(train_step(step_model, optimizer, objective, x, step, params))
                step += 1
                bar.update(1)
                if step == 1 and checkpoint is None:
                    out.say(f"first training step done {time.perf_counter() - START:.1f} s {SINCE}")
                stop = signals.requested if world == 1 else None  # under torchrun: the stop all ranks agree on
                if lifecycle.closes_window(step, params) or stop:
                    means = window.close()
                    if world > 1:                             # the global batch's means; any rank's stop stops all
                        means, stop = ddp.agree(means, signals.requested or 0)
                    if not lifecycle.finite(means):
                        return lifecycle.non_finite(out, step, guard, params, save)
                    row = lifecycle.log_row(step, means)
                    out.log.write(row)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step" and not k.startswith("kl_")})
                    guard.window_was_finite(step)
                lifecycle.periodic_work(step, model, objective, x_fixed, out, dataset, params, snapshot)
                if stop:
                    return lifecycle.stopped(out, stop, step, save, snapshot())
        except lifecycle.StopNow as stop:
            return lifecycle.stopped_at_once(out, stop, step)
        except (Exception, KeyboardInterrupt):
            return lifecycle.failed(out, step, guard, save)
        finally:
            bar.close()
            out.close_logs()
    seconds = time.perf_counter() - loop_start
    speed = (f"trained {step - first_step} steps in {seconds:.0f} s: {(step - first_step) / max(seconds, 1e-9):.1f} "
             f"steps/s, pictures and checkpoints included")
    try:
        return lifecycle.finish(model, snapshot(), x_fixed, out, dataset, params, speed)
    finally:
        out.close()
