"""Packed training: K VAEs of one shape trained in one vmapped step, each keeping its own run folder (sweeps)."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import sys
import time

import torch
from tqdm import tqdm

from betavae.errors import UserError
from betavae.speed import kernels, switches
from betavae.training import lifecycle, loop
from betavae import checkpoints, parts
from betavae.objectives import REGISTRY as OBJECTIVES
from betavae.network import VAE
from params import Params

# Params that must agree for models to share one step: the network's shape, the batch, the one Adam, the loop's
# length and the speed switches (one autocast for all). Everything else (β, γ, C, seeds, schedules) is per model.
SHARED = ("dataset", "latent_dim", "batch_size", "lr", "adam_beta1", "adam_beta2", "objective", "steps", "amp",
          "threads", "fused_adam", "device")


def pack_key(params: Params) -> tuple:
    """Models whose keys are equal can be packed together."""
    return tuple(getattr(params, name) for name in SHARED)


def _noise_generator(params: Params, device: torch.device) -> torch.Generator:
    """The stream torch.randn_like draws from in training.loop.train after the model's init: the CPU global generator
    just after VAE(...) under manual_seed(seed), or the CUDA generator seeded by it (init runs on the CPU)."""
    if device.type == "cuda":
        return torch.Generator(device).manual_seed(params.seed)
    generator = torch.Generator()
    generator.set_state(torch.get_rng_state())
    return generator


class Pack:
    """K VAEs as stacked parameters: one vmapped forward, each model's own objective, one Adam over the stacks.

    Adam (amsgrad off, no weight decay) is elementwise and every model steps each time, so one Adam over [K, ...]
    tensors is K independent Adams; the loss is the sum of the K losses, whose gradients do not mix.
    """

    def __init__(self, params_list: list[Params], channels: int, dataset_size: int, device: torch.device,
                 states: list[dict] | None = None):
        self.params_list, self.device, self.size = params_list, device, len(params_list)
        self.models, self.noise = [], []
        for params in params_list:
            self.models.append(parts.network(params, channels, device))  # model k's init equals its solo init
            self.noise.append(_noise_generator(params, device))
        for model, state in zip(self.models, states or []):
            model.load_state_dict(state["model"])
        first = params_list[0]
        settings = switches.resolve(first, device)
        self.base = copy.deepcopy(self.models[0]).to("meta")  # the code the stacked weights run through
        kernels.plug_in(self.base, {"amp": settings["amp"]})  # amp's float32 output layer; no CPU kernels under vmap
        self.weights, _ = torch.func.stack_module_state(self.models)  # name → [K, ...] leaf tensors
        self.optimizer = parts.optimizer(first, list(self.weights.values()), **switches.adam_options(settings))
        if states:
            self.optimizer.load_state_dict(stack_optimizer_states([state["optimizer"] for state in states]))
            lifecycle.apply_optimizer_params(self.optimizer, first.lr, (first.adam_beta1, first.adam_beta2))
        self.objectives = [parts.objective(params, dataset_size, device) for params in params_list]
        for objective, state in zip(self.objectives, states or []):
            if "objective" in state:                        # a stateful objective's networks and optimiser
                objective.load_state_dict(state["objective"])

    def _part(self, prefix: str) -> dict[str, torch.Tensor]:
        return {name[len(prefix):]: weight for name, weight in self.weights.items() if name.startswith(prefix)}

    def forward(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """xs [K, B, C, 64, 64] → x_logits [K, B, C, 64, 64], mu, logvar, z [K, B, D]; model k's ε from its stream."""
        call = torch.func.functional_call
        mu, logvar = torch.func.vmap(lambda p, x: call(self.base.encoder, p, (x,)))(self._part("encoder."), xs)
        eps = torch.stack([torch.randn(mu.shape[1:], dtype=mu.dtype, device=mu.device, generator=generator)
                           for generator in self.noise])  # the draws randn_like(mu) makes alone, in the same dtype
        z = mu + eps * torch.exp(0.5 * logvar)            # reparameterisation, as models.VAE.forward
        x_logits = torch.func.vmap(lambda p, z: call(self.base.decoder, p, (z,)))(self._part("decoder."), z)
        return x_logits, mu, logvar, z

    def train_step(self, xs: torch.Tensor, step: int) -> list[dict[str, torch.Tensor]]:
        """One optimiser step of every model on its own batch xs[k]; returns each model's terms (on device)."""
        with switches.autocast(xs, self.params_list[0]):
            x_logits, mu, logvar, z = self.forward(xs)
        x_logits, mu, logvar, z = x_logits.float(), mu.float(), logvar.float(), z.float()
        terms = [objective(xs[k], x_logits[k], mu[k], logvar[k], z[k], step, params)  # scheduled weights per model
                 for k, (objective, params) in enumerate(zip(self.objectives, self.params_list))]
        self.optimizer.zero_grad(set_to_none=True)
        sum(t["loss"] for t in terms).backward()
        self.optimizer.step()
        for k, objective in enumerate(self.objectives):  # a stateful objective's own update (losses.Objective)
            if hasattr(objective, "after_step"):
                terms[k].update(objective.after_step())
        return terms

    def model_state(self, k: int) -> dict[str, torch.Tensor]:
        return {name: weight[k].detach().clone() for name, weight in self.weights.items()}

    def optimizer_state(self, k: int) -> dict:
        """Model k's part, in the format of torch.optim.Adam(model.parameters()).state_dict()."""
        full = self.optimizer.state_dict()
        return {"state": {index: {key: (value[k] if value.dim() else value).clone() for key, value in state.items()}
                          for index, state in full["state"].items()},
                "param_groups": copy.deepcopy(full["param_groups"])}

    def module(self, k: int) -> VAE:
        """Model k as an ordinary VAE holding its current weights (for pictures, validation and metrics)."""
        self.models[k].load_state_dict(self.model_state(k))
        return self.models[k]

    @contextlib.contextmanager
    def own_rng(self, k: int):
        """Run side work on model k's noise stream as the global RNG, as it would be in loop.train alone."""
        cuda = self.device.type == "cuda"
        get = (lambda: torch.cuda.get_rng_state(self.device)) if cuda else torch.get_rng_state
        put = (lambda state: torch.cuda.set_rng_state(state, self.device)) if cuda else torch.set_rng_state
        saved = get()
        put(self.noise[k].get_state())
        try:
            yield
        finally:
            self.noise[k].set_state(get())
            put(saved)


def stack_optimizer_states(states: list[dict]) -> dict:
    """K per-model Adam state_dicts → one for the stacked parameters (the inverse of Pack.optimizer_state)."""
    return {"state": {index: {key: torch.stack([s["state"][index][key] for s in states]) if value.dim() else value
                              for key, value in state.items()} for index, state in states[0]["state"].items()},
            "param_groups": copy.deepcopy(states[0]["param_groups"])}


def _check(params_list: list[Params], run_dirs: list[str], checkpoints) -> list[dict | None]:
    """The checkpoints, one per model (None: a fresh start), once the pack is one that can train together."""
    if len(run_dirs) != len(params_list) or (checkpoints is not None and len(checkpoints) != len(params_list)):
        raise UserError("train_pack needs one run folder (and one checkpoint or None) per params; pass equal lists.")
    differing = [name for name, value in zip(SHARED, pack_key(params_list[0]))
                 if any(getattr(p, name) != value for p in params_list)]
    if differing:
        raise UserError(f"Packed models must share {', '.join(differing)}; group the sweep by betavae.scale.packed.pack_key.")
    steps = {c["step"] if c is not None else 0 for c in (checkpoints or [None] * len(params_list))}
    if len(steps) > 1:
        raise UserError(f"The pack's checkpoints are at different steps ({sorted(steps)}); resume them one by one "
                        f"with python main.py --resume RUN_DIR.")
    checkpoints = checkpoints or [None] * len(params_list)
    if len(params_list) > 1 and any(c is not None for c in checkpoints) and not all(c is not None for c in checkpoints):
        raise UserError("Resume a pack with a checkpoint for every model, or train the unfinished ones alone.")
    return checkpoints



def pack_state(pack: Pack, k: int, step: int, index_generator: torch.Generator, channels: int) -> dict:
    """Model k's checkpoint, as loop.checkpoint_state writes it for a model trained alone."""
    device, params = pack.device, pack.params_list[k]
    rng = {"torch": pack.noise[k].get_state() if device.type != "cuda" else torch.get_rng_state(),
           "index": index_generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
        if device.type == "cuda":
            rng["cuda"][device.index or 0] = pack.noise[k].get_state()
    objective = pack.objectives[k]
    return checkpoints.layout(pack.model_state(k), pack.optimizer_state(k), step, rng, dataclasses.asdict(params),
                              channels, params.latent_dim,
                              objective.state_dict() if hasattr(objective, "state_dict") else None)


def start_pack(params_list: list[Params], dataset, device: torch.device, checkpoints: list[dict | None]):
    """The pack, each model's batch stream and images for pictures, restored from `checkpoints` when resuming."""
    resumed = checkpoints[0] is not None
    switches.apply_process_settings(params_list[0], device)
    pack = Pack(params_list, dataset.channels, len(dataset), device, checkpoints if resumed else None)
    generators = [torch.Generator().manual_seed(p.seed) for p in params_list]
    for k, checkpoint in enumerate(checkpoints if resumed else []):
        generators[k].set_state(checkpoint["rng"]["index"])
        noise = checkpoint["rng"]["cuda"][device.index or 0] if device.type == "cuda" else checkpoint["rng"]["torch"]
        pack.noise[k].set_state(noise)
    return pack, generators, [lifecycle.fixed_images(dataset, p) for p in params_list]


def train_pack(params_list: list[Params], dataset, run_dirs: list[str], device: torch.device,
               checkpoints: list[dict | None] | None = None) -> list[int]:
    """Train the models as one pack, each writing its run folder as loop.train would; exit codes per model.
    The loop is loop.train's for K models: the same lifecycle pieces, called once per model."""
    checkpoints = _check(params_list, run_dirs, checkpoints)
    contract = OBJECTIVES[params_list[0].objective]
    if len(params_list) == 1 or not contract.packable:
        if len(params_list) > 1:
            print(f"notice: objective '{params_list[0].objective}' is not packed ({contract.why_not_packed}); "
                  f"training {len(params_list)} models one after another", file=sys.stderr)
        return [loop.train(p, dataset, d, device, c) for p, d, c in zip(params_list, run_dirs, checkpoints)]
    first, size, resumed = params_list[0], len(params_list), checkpoints[0] is not None
    step = checkpoints[0]["step"] if resumed else 0
    outs = [lifecycle.RunOutput(d, step if resumed else None, prefix=f"{os.path.basename(d)}: ") for d in run_dirs]
    pack, generators, x_fixed = start_pack(params_list, dataset, device, checkpoints)
    snapshots = [lambda k=k: pack_state(pack, k, step, generators[k], dataset.channels) for k in range(size)]
    saves = [lambda state, k=k: _save(pack, k, state, x_fixed[k], outs[k], dataset) for k in range(size)]
    guards = [lifecycle.NanGuard(snapshot()) for snapshot in snapshots]
    windows = [lifecycle.LogWindow() for _ in range(size)]
    codes: list[int | None] = [None] * size           # None: still training
    bar = tqdm(total=first.steps, initial=step, desc=f"pack of {size}", dynamic_ncols=True, smoothing=0.05)
    loop_start, first_step = time.perf_counter(), step
    with lifecycle.StopSignals() as signals:
        try:
            while step < first.steps:
                for k in (k for k in range(size) if codes[k] is None):
                    guards[k].before_step(step, params_list[k], snapshots[k])
                xs = torch.stack([dataset.batch(torch.randint(len(dataset), (first.batch_size,), generator=g))[0]
                                  for g in generators])  # [K, B, C, 64, 64]: each model its own stream
                terms = pack.train_step(xs, step)
                step += 1
                bar.update(1)
                for k, (params, out) in enumerate(zip(params_list, outs)):
                    if codes[k] is not None:                # a model that failed keeps stepping, unlogged
                        continue
                    windows[k].add(terms[k])
                    if step == 1 and not resumed:
                        out.say(f"first training step done {time.perf_counter() - loop.START:.1f} s {loop.SINCE} "
                                f"(packed with {size - 1} other models)")
                    if lifecycle.closes_window(step, params) or signals.requested:
                        means = windows[k].close()
                        if not lifecycle.finite(means):
                            codes[k] = lifecycle.non_finite(out, step, guards[k], params, saves[k])
                            continue
                        out.log.write(lifecycle.log_row(step, means))
                        guards[k].window_was_finite(step)
                    if lifecycle.work_due(step, params):
                        with pack.own_rng(k):
                            lifecycle.periodic_work(step, pack.module(k), pack.objectives[k], x_fixed[k], out,
                                                    dataset, params, snapshots[k])
                    if signals.requested:
                        codes[k] = lifecycle.stopped(out, signals.requested, step, saves[k], snapshots[k]())
                if all(code is not None for code in codes):
                    return codes
        except lifecycle.StopNow as stop:
            return [code if code is not None else lifecycle.stopped_at_once(out, stop, step)
                    for code, out in zip(codes, outs)]
        except (Exception, KeyboardInterrupt):
            return [code if code is not None else lifecycle.failed(outs[k], step, guards[k], saves[k])
                    for k, code in enumerate(codes)]
        finally:
            bar.close()
            for out in outs:
                out.close_logs()
    seconds = time.perf_counter() - loop_start
    speed = (f"trained {step - first_step} steps in {seconds:.0f} s in a pack of {size}: "
             f"{size * (step - first_step) / max(seconds, 1e-9):.1f} model-steps/s, pictures and checkpoints included")
    for k in (k for k in range(size) if codes[k] is None):
        with pack.own_rng(k):
            codes[k] = lifecycle.finish(pack.module(k), snapshots[k](), x_fixed[k], outs[k], dataset, params_list[k],
                                        speed)
        outs[k].close()
    return codes


def _save(pack: Pack, k: int, state: dict, x_fixed: torch.Tensor, out: lifecycle.RunOutput, dataset) -> None:
    """Model k's checkpoint and the pictures of its weights, drawn on its own noise stream."""
    with pack.own_rng(k):
        lifecycle.save_state(pack.models[k], state, x_fixed, out, dataset, pack.params_list[k])
