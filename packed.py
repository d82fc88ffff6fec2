"""Packed training: K VAEs of one shape trained in one vmapped step, each keeping its own run folder (sweeps)."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import signal
import sys
import time
import traceback

import torch
from tqdm import tqdm

import main
import metrics
import performance
import report
import traverse
import validation
from losses import make_objective
from models import VAE, save_checkpoint
from params import Params, UserError

# Params that must agree for models to share one step: the network's shape, the batch, the one Adam, the loop's
# length and the speed switches (one autocast for all). Everything else (β, γ, C, seeds, schedules) is per model.
SHARED = ("dataset", "latent_dim", "batch_size", "lr", "adam_beta1", "adam_beta2", "objective", "steps", "amp",
          "threads", "flush_denormal", "fused_adam", "device")
AUTO_CANDIDATES = {"cpu": (1, 2, 4), "cuda": (1, 8, 32, 128)}
_AUTO_CACHE: dict[tuple, int] = {}  # (device, channels, latent_dim, batch_size) → measured best pack size


def pack_key(params: Params) -> tuple:
    """Models whose keys are equal can be packed together."""
    return tuple(getattr(params, name) for name in SHARED)


def _noise_generator(params: Params, device: torch.device) -> torch.Generator:
    """The stream torch.randn_like draws from in main.train after the model's init: the CPU global generator
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
            torch.manual_seed(params.seed)                  # as main.train: model k's init equals its solo init
            self.models.append(VAE(channels, params.latent_dim).to(device))
            self.noise.append(_noise_generator(params, device))
        for model, state in zip(self.models, states or []):
            model.load_state_dict(state["model"])
        self.base = copy.deepcopy(self.models[0]).to("meta")  # the code the stacked weights run through
        self.weights, _ = torch.func.stack_module_state(self.models)  # name → [K, ...] leaf tensors
        first = params_list[0]
        self.optimizer = torch.optim.Adam(list(self.weights.values()), lr=first.lr,
                                          betas=(first.adam_beta1, first.adam_beta2),
                                          **performance.adam_options(performance.resolve(first, device)))
        if states:
            self.optimizer.load_state_dict(stack_optimizer_states([state["optimizer"] for state in states]))
        self.objectives = [make_objective(params, dataset_size, device) for params in params_list]

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
        with performance.autocast(xs, self.params_list[0]):
            x_logits, mu, logvar, z = self.forward(xs)
        x_logits, mu, logvar, z = x_logits.float(), mu.float(), logvar.float(), z.float()
        terms = [objective(xs[k], x_logits[k], mu[k], logvar[k], z[k], step, params)  # scheduled weights per model
                 for k, (objective, params) in enumerate(zip(self.objectives, self.params_list))]
        self.optimizer.zero_grad(set_to_none=True)
        sum(t["loss"] for t in terms).backward()
        self.optimizer.step()
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
        """Run side work on model k's noise stream as the global RNG, as it would be in main.train alone."""
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


def _check(params_list: list[Params], run_dirs: list[str], checkpoints) -> None:
    if len(run_dirs) != len(params_list) or (checkpoints is not None and len(checkpoints) != len(params_list)):
        raise UserError("train_pack needs one run folder (and one checkpoint or None) per params; pass equal lists.")
    differing = [name for name, value in zip(SHARED, pack_key(params_list[0]))
                 if any(getattr(p, name) != value for p in params_list)]
    if differing:
        raise UserError(f"Packed models must share {', '.join(differing)}; group the sweep by packed.pack_key.")
    steps = {c["step"] if c is not None else 0 for c in (checkpoints or [None] * len(params_list))}
    if len(steps) > 1:
        raise UserError(f"The pack's checkpoints are at different steps ({sorted(steps)}); resume them one by one "
                        f"with python main.py --resume RUN_DIR.")


def train_pack(params_list: list[Params], dataset, run_dirs: list[str], device: torch.device,
               checkpoints: list[dict | None] | None = None) -> list[int]:
    """Train the models as one pack, each writing its run folder as main.train would; exit codes per model."""
    _check(params_list, run_dirs, checkpoints)
    checkpoints = checkpoints or [None] * len(params_list)
    if len(params_list) == 1 or params_list[0].objective == "factor":
        if len(params_list) > 1:
            print(f"notice: FactorVAE's discriminator is not packed; training {len(params_list)} models one after "
                  f"another", file=sys.stderr)
        return [main.train(p, dataset, d, device, c) for p, d, c in zip(params_list, run_dirs, checkpoints)]
    if any(c is not None for c in checkpoints) and not all(c is not None for c in checkpoints):
        raise UserError("Resume a pack with a checkpoint for every model, or train the unfinished ones alone.")
    first, size = params_list[0], len(params_list)
    log_files = [open(os.path.join(d, "run.log"), "a") for d in run_dirs]

    def say(k: int, message: str) -> None:
        tqdm.write(f"{os.path.basename(run_dirs[k])}: {message}", file=sys.stderr)
        log_files[k].write(message + "\n")
        log_files[k].flush()

    _apply_settings(first, device)
    resumed = checkpoints[0] is not None
    pack = Pack(params_list, dataset.channels, len(dataset), device, checkpoints if resumed else None)
    index_generators = [torch.Generator().manual_seed(p.seed) for p in params_list]
    x_fixed = [dataset.batch(torch.randint(len(dataset), (p.traverse_samples,),
                                           generator=torch.Generator().manual_seed(p.seed + 1)))[0]
               for p in params_list]
    step = 0
    if resumed:
        for k, checkpoint in enumerate(checkpoints):
            index_generators[k].set_state(checkpoint["rng"]["index"])
            noise = checkpoint["rng"]["cuda"][device.index or 0] if device.type == "cuda" else checkpoint["rng"]["torch"]
            pack.noise[k].set_state(noise)
        step = checkpoints[0]["step"]
    logs = [main.CsvLog(os.path.join(d, "log.csv"), step if resumed else None) for d in run_dirs]
    val_logs = [main.CsvLog(os.path.join(d, "val.csv"), step if resumed else None) for d in run_dirs]
    codes: list[int | None] = [None] * size           # None: still training

    def snapshot(k: int) -> dict:
        rng = {"torch": pack.noise[k].get_state() if device.type != "cuda" else torch.get_rng_state(),
               "index": index_generators[k].get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
            if device.type == "cuda":
                rng["cuda"][device.index or 0] = pack.noise[k].get_state()
        return {"model": pack.model_state(k), "optimizer": pack.optimizer_state(k), "step": step, "rng": rng,
                "params": dataclasses.asdict(params_list[k]), "channels": dataset.channels,
                "latent_dim": params_list[k].latent_dim}

    def save(k: int, state: dict) -> None:
        save_checkpoint(os.path.join(run_dirs[k], "checkpoint.pt"), state)
        model = pack.models[k]
        model.load_state_dict(state["model"])             # pictures of the checkpointed weights
        with pack.own_rng(k):
            traverse.save_all(model, x_fixed[k], run_dirs[k], tag=f"_step{state['step']:06d}",
                              points=params_list[k].traverse_points, dataset=dataset, params=params_list[k])

    stop_requested = []

    def on_signal(signum, frame):  # Ctrl-C, SIGTERM (Slurm, torchrun), SIGHUP as main.train; a second one acts at once
        stop_requested.append(signum)
        signal.signal(signum, previous_handlers[signum])
    previous_handlers = {signum: signal.signal(signum, on_signal) for signum in main.STOP_SIGNALS}
    last_good = [snapshot(k) for k in range(size)]
    totals, windows = [{} for _ in range(size)], [0] * size
    bar = tqdm(total=first.steps, initial=step, desc=f"pack of {size}", dynamic_ncols=True, smoothing=0.05)
    loop_start, first_step = time.perf_counter(), step
    try:
        while step < first.steps:
            xs = torch.stack([dataset.batch(torch.randint(len(dataset), (first.batch_size,), generator=g))[0]
                              for g in index_generators])  # [K, B, C, 64, 64]: each model its own stream
            terms = pack.train_step(xs, step)
            step += 1
            bar.update(1)
            if step == 1 and not resumed:
                for k in range(size):
                    say(k, f"first training step done {time.perf_counter() - main.START:.1f} s after start "
                           f"(imports included; packed with {size - 1} other models)")
            for k in range(size):
                for name, value in terms[k].items():
                    totals[k][name] = totals[k].get(name, 0) + value.detach()
                windows[k] += 1
            for k, params in enumerate(params_list):
                if codes[k] is not None:
                    continue
                if step % params.log_every == 0 or step == params.steps or stop_requested:
                    means = {name: (total / windows[k]).cpu() for name, total in totals[k].items()}
                    totals[k], windows[k] = {}, 0
                    if not math.isfinite(means["loss"].item()):
                        save(k, last_good[k])
                        say(k, f"error: the loss became non-finite before step {step}; the last good state (step "
                               f"{last_good[k]['step']}) is saved in {run_dirs[k]}/checkpoint.pt: resume with a "
                               f"lower lr, e.g. python main.py --resume {run_dirs[k]} --set lr={params.lr / 10:g}")
                        codes[k] = 1
                        continue
                    row = {"step": step, **{n: round(v.item(), 6) for n, v in means.items() if v.dim() == 0}}
                    row.update({f"kl_{i}": round(v, 6) for i, v in enumerate(means["kl_per_dim"].tolist())})
                    logs[k].write(row)
                    last_good[k] = snapshot(k)
                if step % params.sample_every == 0:
                    with pack.own_rng(k):
                        traverse.save_all(pack.module(k), x_fixed[k], run_dirs[k], tag=f"_step{step:06d}",
                                          points=params.traverse_points, dataset=dataset, params=params)
                    report.refresh(run_dirs[k], params.active_kl)
                if step % params.checkpoint_every == 0:
                    save_checkpoint(os.path.join(run_dirs[k], "checkpoint.pt"), snapshot(k))
                if (params.eval_every and step % params.eval_every == 0) or step == params.steps:
                    with pack.own_rng(k):
                        validation.log_validation(pack.module(k), pack.objectives[k], dataset, step, params,
                                                  val_logs[k])
                if params.metrics and params.eval_every > 0 and step % params.eval_every == 0 and step < params.steps:
                    with pack.own_rng(k):
                        metrics.record_run(pack.module(k), dataset, run_dirs[k], step, params,
                                           lambda message, k=k: say(k, message))
                if stop_requested:
                    save(k, snapshot(k))
                    say(k, f"stopped by {main.signal_name(stop_requested[0])} at step {step}; checkpoint and images "
                           f"saved; continue with: python main.py --resume {run_dirs[k]}")
                    codes[k] = 128 + stop_requested[0]
            if stop_requested or all(code is not None for code in codes):
                return [code if code is not None else 128 + stop_requested[0] for code in codes]
    except (Exception, KeyboardInterrupt):  # a second Ctrl-C lands here too
        for k in range(size):
            if codes[k] is None:
                log_files[k].write(traceback.format_exc())
                save(k, last_good[k])
                say(k, f"error: packed training failed at step {step} "
                       f"({traceback.format_exc().strip().splitlines()[-1]}); the last good state (step "
                       f"{last_good[k]['step']}) is saved in {run_dirs[k]}/checkpoint.pt; traceback in "
                       f"{run_dirs[k]}/run.log")
                codes[k] = 1
        return codes
    finally:
        bar.close()
        for log in logs + val_logs:
            log.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    seconds = time.perf_counter() - loop_start
    for k, params in enumerate(params_list):
        if codes[k] is not None:
            continue
        save(k, snapshot(k))
        say(k, f"trained {step - first_step} steps in {seconds:.0f} s in a pack of {size}: "
               f"{size * (step - first_step) / max(seconds, 1e-9):.1f} model-steps/s, pictures and checkpoints included")
        model = pack.module(k)
        with pack.own_rng(k):
            if params.metrics:
                metrics.record_run(model, dataset, run_dirs[k], step, params, lambda message, k=k: say(k, message))
            validation.plot_validation(run_dirs[k])
            dataset.end_of_run_pictures(model, run_dirs[k], params)
            report.refresh(run_dirs[k], params.active_kl)
        say(k, f"done: {step} steps; outputs in {run_dirs[k]}")
        log_files[k].close()
        codes[k] = 0
    return codes


def _apply_settings(params: Params, device: torch.device) -> None:
    """The process-wide speed settings main.train applies through performance.prepare_performance."""
    settings = performance.resolve(params, device)
    if settings["threads"] > 0:
        torch.set_num_threads(settings["threads"])
    torch.set_flush_denormal(settings["flush_denormal"])


def _one_after_another(params_list: list[Params], images: torch.Tensor, device: torch.device):
    """A function running each model for `steps` steps in turn, as main.train does (main.train_step)."""
    runs = []
    for params in params_list:
        torch.manual_seed(params.seed)
        model = VAE(images.shape[1], params.latent_dim).to(device)
        settings = performance.prepare_performance(model, params, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, betas=(params.adam_beta1, params.adam_beta2),
                                     **performance.adam_options(settings))
        objective, generator = make_objective(params, len(images), device), torch.Generator(device).manual_seed(0)

        def run(steps, model=model, optimizer=optimizer, objective=objective, generator=generator, params=params):
            for step in range(steps):
                indices = torch.randint(len(images), (params.batch_size,), generator=generator, device=device)
                main.train_step(model, optimizer, objective, images[indices], step, params)
        runs.append(run)
    return lambda steps: [run(steps) for run in runs]


def _packed(params_list: list[Params], images: torch.Tensor, device: torch.device):
    """A function running `steps` packed steps of all the models."""
    _apply_settings(params_list[0], device)
    pack = Pack(params_list, images.shape[1], len(images), device)
    generators = [torch.Generator(device).manual_seed(k) for k in range(len(params_list))]

    def run(steps):
        for step in range(steps):
            xs = torch.stack([images[torch.randint(len(images), (params_list[0].batch_size,), generator=g,
                                                   device=device)] for g in generators])  # [K, B, C, 64, 64]
            pack.train_step(xs, step)
    return run


def timer(params: Params, images: torch.Tensor, device: torch.device, size: int, packed: bool = True):
    """A function timing `steps` steps of `size` copies of params (seeds params.seed + k), packed or one after
    another; returns model-steps/s. images: [N, C, 64, 64] on device."""
    params_list = [dataclasses.replace(params, seed=params.seed + k) for k in range(size)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        run = (_packed if packed and size > 1 else _one_after_another)(params_list, images, device)

    def timed(steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run(steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return size * steps / (time.perf_counter() - start)
    return timed


def measure(params: Params, images: torch.Tensor, device: torch.device, size: int, steps: int = 5) -> float:
    """Model-steps/s of a pack of `size` (size 1: main.train's own step), after two untimed steps."""
    timed = timer(params, images, device, size)
    timed(2)
    return timed(steps)


def resolve_pack(params: Params, dataset, device: torch.device) -> int:
    """params.pack, or for "auto" the candidate pack size with the most model-steps/s measured on `device`
    (cached per device and shape for the process); a pack must beat one model by 10% to be chosen, since on a
    loaded machine smaller differences are noise and packing must never cost."""
    if params.pack != "auto":
        return params.pack
    if params.objective == "factor":
        return 1                                          # not packed (see train_pack)
    key = (str(device), dataset.channels, params.latent_dim, params.batch_size, params.amp)
    if key not in _AUTO_CACHE:
        images = dataset.batch(torch.randint(len(dataset), (max(256, params.batch_size),),
                                             generator=torch.Generator().manual_seed(0)))[0]
        rates = {size: measure(params, images, device, size) for size in AUTO_CANDIDATES.get(device.type, (1,))}
        best = max(rates, key=rates.get)
        _AUTO_CACHE[key] = best if rates[best] >= 1.1 * rates[1] else 1
    return _AUTO_CACHE[key]
