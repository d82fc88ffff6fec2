"""Train a β-VAE: python main.py [--preset NAME] [--config FILE.yaml] [--set key=value ...] [--resume RUN_DIR]."""
from __future__ import annotations

import time

START = time.perf_counter()  # before the heavy imports, to report the time to the first step honestly

import argparse  # noqa: E402
import copy  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import glob  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

try:
    import fcntl  # noqa: E402  (POSIX; the run-folder lock is skipped where it is missing)
except ImportError:  # pragma: no cover
    fcntl = None

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

import ddp  # noqa: E402
import metrics  # noqa: E402
import performance  # noqa: E402
import report  # noqa: E402
import traverse  # noqa: E402
import validation  # noqa: E402
from data import DataError, make_dataset  # noqa: E402
from losses import OBJECTIVES, make_objective  # noqa: E402,F401  (OBJECTIVES: tests patch it through here)
from models import VAE, CheckpointWriteError, load_checkpoint, save_checkpoint  # noqa: E402
from params import (Params, UserError, apply_overrides, build_params, param_table, parse_assignment,  # noqa: E402
                    preset_descriptions, validate)  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    presets = "\n".join(f"  {name:<26} {text}" for name, text in preset_descriptions().items())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"presets (params.PRESETS):\n{presets}\n\nEvery param is documented by its comment in params.py; "
               f"python main.py --list-params prints them with their defaults.")
    parser.add_argument("--preset", help="a named preset from params.PRESETS (listed below)")
    parser.add_argument("--config", help="YAML file of param overrides (a run's params.yaml works)")
    parser.add_argument("--set", dest="assignments", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override params, e.g. --set steps=10 beta=2; repeatable; applied last")
    parser.add_argument("--list-params", action="store_true", help="print every param with type, default, meaning")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    return parser.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device is 'cuda' but no CUDA GPU is visible; use --set device=auto or device=cpu.")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def new_run_dir(params: Params, preset: str | None) -> str:
    """A fresh folder under out_dir; an existing name gets a numeric suffix, so no run is overwritten."""
    name = params.run_name
    if name and (name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name)):
        raise UserError(f"run_name '{name}' must be a plain folder name (no '/', '..' or absolute path); "
                        f"choose the parent folder with --set out_dir=...")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(params.out_dir, name or f"{preset or params.objective}_{params.dataset}_{stamp}")
    folder, suffix = base, 1
    try:
        os.makedirs(params.out_dir, exist_ok=True)
        while True:  # claimed by mkdir itself, so two processes launching the same name never share a folder
            try:
                os.mkdir(folder)
                return folder
            except FileExistsError:
                suffix += 1
                folder = f"{base}-{suffix}"
    except OSError as error:
        raise UserError(f"Cannot create the run folder {folder} ({error.strerror or error}); choose a writable "
                        f"folder with --set out_dir=...") from None


def clear_stale_temporaries(run_dir: str) -> None:
    """Remove half-written checkpoint/report files (*.tmp) a killed process left; only the lock holder calls this."""
    for path in glob.glob(os.path.join(glob.escape(run_dir), "*.tmp")):
        with contextlib.suppress(OSError):
            os.remove(path)


def lock_run_dir(run_dir: str):
    """Hold <run>/.lock (flock, released when the process ends) so only one process trains a run folder."""
    path = os.path.join(run_dir, ".lock")
    try:
        handle = open(path, "a+")
    except OSError as error:
        raise UserError(f"Cannot write to the run folder {run_dir} ({error.strerror or error}); make it writable "
                        f"or start a new run.") from None
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"Run folder {run_dir} is being trained by another process (pid {owner}); wait for it "
                            f"to end or stop it first.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_params(run_dir: str, params: Params, device: torch.device, argv: list[str],
                 settings: dict | None = None) -> None:
    record = {
        "params": dataclasses.asdict(params),
        "command": " ".join([*(["python"] if ddp.world_size() == 1 else
                               ["torchrun", f"--nnodes={ddp.world_size() // int(os.environ['LOCAL_WORLD_SIZE'])}",
                                f"--nproc_per_node={os.environ['LOCAL_WORLD_SIZE']}"]), "main.py", *argv]),
        "git_commit": git_commit(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "performance": settings or performance.resolve(params, device),  # the speed switches, "auto" resolved
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": np.__version__},
    }
    try:
        with open(os.path.join(run_dir, "params.yaml"), "w") as f:
            yaml.safe_dump(record, f, sort_keys=False)
    except OSError as error:
        raise UserError(f"Cannot write {os.path.join(run_dir, 'params.yaml')} ({error.strerror or error}); make "
                        f"the run folder writable or choose another with --set out_dir=...") from None


class CsvLog:
    """One row per logged step; on resume, rows past the checkpoint are dropped so the log has no duplicates."""

    def __init__(self, path: str, resume_step: int | None):
        self.path, self.writer, self.file = path, None, None
        if resume_step is not None and os.path.exists(path):
            with open(path) as f:
                rows = list(csv.reader(f))
            kept = [rows[0]] + [r for r in rows[1:] if r and r[0].strip().isdigit() and int(r[0]) <= resume_step] \
                if rows else []  # a blank or garbled line (a crash mid-write, an editor) is dropped, not fatal
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows(kept)

    def write(self, row: dict) -> None:
        if self.writer is None:
            fresh = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            self.file = open(self.path, "a", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            if fresh:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


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


def train_step(model, optimizer, objective, x: torch.Tensor, step: int, params: Params) -> dict[str, torch.Tensor]:
    """One optimiser step on batch x; returns the objective's terms (tensors, not yet read by the host)."""
    x = performance.to_memory_format(x, params)
    with performance.autocast(x, params):          # the forward in bf16 when amp is on; the loss in float32
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


class StopNow(BaseException):
    """A second stop signal during the stop-and-save: leave at once (the atomic write keeps the old checkpoint)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


def signal_name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


def train(params: Params, dataset, run_dir: str, device: torch.device, checkpoint: dict | None = None,
          settings: dict | None = None) -> int:
    """The training loop, written out (`settings`: performance.resolve's; None resolves). Returns the exit code."""
    lead, world = ddp.rank() == 0, ddp.world_size()  # under torchrun only rank 0 writes files and prints

    def say(message: str) -> None:
        if not lead:
            if message.startswith("error"):
                print(f"rank {ddp.rank()}: {message}", file=sys.stderr)
            return
        tqdm.write(message, file=sys.stderr)
        with contextlib.suppress(OSError, ValueError):  # a full disk must not hide the message itself
            log_file.write(message + "\n")
            log_file.flush()
    log_file = open(os.path.join(run_dir, "run.log") if lead else os.devnull, "a")
    torch.manual_seed(params.seed)
    model = VAE(dataset.channels, params.latent_dim).to(device)
    settings = performance.prepare_performance(model, params, device, settings)  # threads, denormals, memory format, compile
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, betas=(params.adam_beta1, params.adam_beta2),
                                 **performance.adam_options(settings))
    objective = make_objective(params, len(dataset), device)
    index_generator = torch.Generator().manual_seed(params.seed)
    # A fixed set of images for every picture of the run, drawn apart from the training stream.
    fixed_indices = torch.randint(len(dataset), (params.traverse_samples,),
                                  generator=torch.Generator().manual_seed(params.seed + 1))
    x_fixed, _ = dataset.batch(fixed_indices)
    step = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "objective" in checkpoint:                       # a stateful objective's networks and optimiser
            objective.load_state_dict(checkpoint["objective"])
        restore_rng(checkpoint["rng"], index_generator)
        step = checkpoint["step"]
    step_model = ddp.wrap(model, device)  # DDP under torchrun: same weights on every rank, gradients averaged
    if not lead:  # its own reparameterisation noise, deterministic; rank 0 keeps the single-process stream
        torch.manual_seed(params.seed + 1_000_003 * ddp.rank() + step)
    log = CsvLog(os.path.join(run_dir, "log.csv") if lead else os.devnull, step if checkpoint is not None else None)
    val_log = CsvLog(os.path.join(run_dir, "val.csv") if lead else os.devnull,  # held-out loss
                     step if checkpoint is not None else None)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")

    def snapshot() -> dict:
        return {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict()),
                "step": step, "rng": rng_state(index_generator), "params": dataclasses.asdict(params),
                "channels": dataset.channels, "latent_dim": params.latent_dim,
                **({"objective": copy.deepcopy(objective.state_dict())} if hasattr(objective, "state_dict") else {})}

    saved_step = [checkpoint["step"] if checkpoint is not None else None]  # the step of the checkpoint on disk

    def on_disk() -> str:
        return (f"the checkpoint of step {saved_step[0]} in {checkpoint_path} is intact" if saved_step[0] is not None
                else "no checkpoint of this run was written")

    def write_checkpoint(state: dict) -> None:
        if not lead:
            return
        save_checkpoint(checkpoint_path, state)
        saved_step[0] = state["step"]

    def save(state: dict) -> None:
        write_checkpoint(state)
        if not lead:
            return
        model.load_state_dict(state["model"])  # pictures of the checkpointed weights
        traverse.save_all(model, x_fixed, run_dir, tag=f"_step{state['step']:06d}", points=params.traverse_points,
                          dataset=dataset, params=params)

    # Ctrl-C, SIGTERM (Slurm, docker stop, timeout) and SIGHUP (a dropped SSH session) stop at the next step and
    # save; a second one during that save leaves at once.
    stop_requested = []
    agreed_stop = []  # under torchrun: the stop all ranks agreed on at a log boundary (each sees signals when it may)

    def stopping() -> list:
        return stop_requested if world == 1 else agreed_stop

    def on_signal(signum, frame):
        if stop_requested:
            raise StopNow(signum)
        stop_requested.append(signum)
    previous_handlers = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    # The NaN guard's fallback: a state whose loss was computed and found finite. `candidate` is taken before the
    # step that ends a log window; when that window's mean loss is finite, that step's own loss (computed at exactly
    # these weights, RNG and batch) was finite, so the candidate becomes last_good; resuming from it repeats that step.
    last_good, candidate = snapshot(), None
    totals, window = {}, 0
    bar = tqdm(total=params.steps, initial=step, desc=os.path.basename(run_dir), dynamic_ncols=True, smoothing=0.05,
               disable=not lead)
    model.train()
    loop_start, first_step = time.perf_counter(), step
    try:
        while step < params.steps:
            if (step + 1) % params.log_every == 0 or step + 1 == params.steps:
                candidate = snapshot()                      # before the step whose loss closes the log window
            indices = torch.randint(len(dataset), (params.batch_size,), generator=index_generator)
            indices = indices[ddp.rank()::world]            # this rank's share of the global batch
            x, _ = dataset.batch(indices)                   # [B / world, C, 64, 64] on device
            terms = train_step(step_model, optimizer, objective, x, step, params)
            step += 1
            bar.update(1)
            if step == 1 and checkpoint is None:
                say(f"first training step done {time.perf_counter() - START:.1f} s after start (imports included)")
            for name, value in terms.items():               # accumulate on device: no host sync per step
                totals[name] = totals.get(name, 0) + value.detach()
            window += 1

            if step % params.log_every == 0 or step == params.steps or stopping():
                means = {name: (total / window).cpu() for name, total in totals.items()}
                if world > 1:                               # the global batch's means; a stop on any rank stops all
                    means, signum = ddp.agree(means, stop_requested[0] if stop_requested else 0)
                    agreed_stop[:] = [signum] if signum else []
                totals, window = {}, 0
                if not math.isfinite(means["loss"].item()):
                    save(last_good)
                    lower_lr = np.format_float_positional(params.lr / 10, trim="-")  # 0.00001, not 1e-05
                    say(f"error: the loss became non-finite before step {step}; the last state with a finite loss "
                        f"(step {last_good['step']}) is saved in {checkpoint_path}: resume with a lower lr, e.g. "
                        f"python main.py --resume {run_dir} --set lr={lower_lr}")
                    return 1
                row = {"step": step, **{k: round(v.item(), 6) for k, v in means.items() if v.dim() == 0}}
                row.update({f"kl_{i}": round(v, 6) for i, v in enumerate(means["kl_per_dim"].tolist())})
                log.write(row)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step" and not k.startswith("kl_")})
                if candidate is not None and candidate["step"] == step - 1:
                    last_good, candidate = candidate, None
            if step % params.sample_every == 0 and lead:
                was_training = model.training
                traverse.save_all(model, x_fixed, run_dir, tag=f"_step{step:06d}", points=params.traverse_points,
                                  dataset=dataset, params=params)
                report.refresh(run_dir, params.active_kl)
                model.train(was_training)
            if step % params.checkpoint_every == 0:
                write_checkpoint(snapshot())
            if ((params.eval_every and step % params.eval_every == 0) or step == params.steps) and lead:
                validation.log_validation(model, objective, dataset, step, params, val_log)
            if params.metrics and params.eval_every > 0 and step % params.eval_every == 0 and step < params.steps \
                    and lead:
                metrics.record_run(model, dataset, run_dir, step, params, say)
            if stopping():
                save(snapshot())
                say(f"stopped by {signal_name(stopping()[0])} at step {step}; checkpoint and images saved; "
                    f"continue with: python main.py --resume {run_dir}")
                return 128 + stopping()[0]
    except StopNow as stop:
        say(f"stopped at once by a second {signal_name(stop.signum)} at step {step}; {on_disk()}")
        return 128 + stop.signum
    except CheckpointWriteError as error:
        say(f"error: {error}; {on_disk()}")
        return 1
    except (Exception, KeyboardInterrupt):
        with contextlib.suppress(OSError, ValueError):
            log_file.write(traceback.format_exc())
        failure = traceback.format_exc().strip().splitlines()[-1]
        try:
            save(last_good)
        except CheckpointWriteError as error:
            say(f"error: training failed at step {step} ({failure}) and {error}; {on_disk()}")
            return 1
        except StopNow as stop:
            say(f"error: training failed at step {step} ({failure}); stopped at once by {signal_name(stop.signum)} "
                f"while saving; {on_disk()}")
            return 128 + stop.signum
        say(f"error: training failed at step {step} ({failure}); the last "
            f"good state (step {last_good['step']}) is saved in {checkpoint_path}; traceback in {run_dir}/run.log")
        return 1
    finally:
        bar.close()
        log.close()
        val_log.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    trained, seconds = step - first_step, time.perf_counter() - loop_start
    if not lead:
        return 0
    try:
        save(snapshot())
    except CheckpointWriteError as error:
        say(f"error: training ended at step {step} but {error}; {on_disk()}")
        return 1
    say(f"trained {trained} steps in {seconds:.0f} s: {trained / max(seconds, 1e-9):.1f} steps/s, pictures and "
        f"checkpoints included")
    if params.metrics:
        metrics.record_run(model, dataset, run_dir, step, params, say)
    validation.plot_validation(run_dir)
    dataset.end_of_run_pictures(model, run_dir, params)  # each dataset's own (CelebA: attribute correlations)
    report.refresh(run_dir, params.active_kl)
    say(f"done: {step} steps; outputs in {run_dir}")
    log_file.close()
    return 0


# Params a resumed run cannot change: the model's shape (latent_dim; dataset sets the channels) or log.csv's columns
# (objective sets the loss terms, latent_dim the kl_i).
FIXED_ON_RESUME = ("latent_dim", "objective", "dataset")


def check_resumable(checkpoint: dict, params: Params) -> None:
    saved = checkpoint["params"]
    for key in FIXED_ON_RESUME:
        if key in saved and saved[key] != getattr(params, key):
            raise UserError(f"--resume cannot change '{key}' ({saved[key]} → {getattr(params, key)}): it changes "
                            f"the model's shape or log.csv's columns; start a new run with --set {key}=... instead.")


def check_weights_fit(checkpoint: dict, channels: int, latent_dim: int, run_dir: str) -> None:
    try:
        VAE(channels, latent_dim).load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError):
        raise UserError(f"The weights in {run_dir}/checkpoint.pt do not fit a VAE with {channels} channels and "
                        f"latent_dim={latent_dim}; resume with the params it was trained with, or start a new run.") \
            from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list_params:
        print(param_table())
        return 0
    try:
        checkpoint = None
        if args.resume:
            if args.preset or args.config:
                raise UserError("--resume continues a run with its own params; drop --preset/--config "
                                "(use --set, e.g. --set steps=N, to change a value).")
            # The run folder or its checkpoint.pt itself.
            run_dir = os.path.dirname(args.resume) or "." if os.path.isfile(args.resume) else args.resume
            checkpoint = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
            params = apply_overrides(Params(), checkpoint["params"], f"{run_dir}/checkpoint.pt")
            params = apply_overrides(params, dict(parse_assignment(a) for a in args.assignments), "--set")
            validate(params)
            check_resumable(checkpoint, params)
        else:
            params = build_params(args.preset, args.config, args.assignments)
        device = resolve_device(params.device)
        if ddp.launched():  # torchrun: one model, data-parallel over its processes (ddp.py)
            device = ddp.setup(params.batch_size, device)
        settings = performance.resolve(params, device)  # once; a bad combination stops before the run folder exists
        dataset = make_dataset(params, device)  # before the run folder, so bad data leaves no empty run behind
        if args.resume:
            check_weights_fit(checkpoint, dataset.channels, params.latent_dim, run_dir)  # before anything is written
        locks = []

        def claim_run_dir() -> str:
            folder = run_dir if args.resume else new_run_dir(params, args.preset)
            locks.append(lock_run_dir(folder))  # held until this process ends
            clear_stale_temporaries(folder)
            write_params(folder, params, device, argv, settings)
            return folder
        run_dir = ddp.share_run_dir(claim_run_dir) if ddp.world_size() > 1 else claim_run_dir()
        try:
            return train(params, dataset, run_dir, device, checkpoint, settings)
        finally:
            for lock in locks:
                lock.close()
            ddp.finish()
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
