"""bench.py and the speed switches: the benchmark's figures and YAML, and each switch training like plain fp32."""
import dataclasses
import os

import pytest
import torch
import yaml

import bench
from betavae.speed import bench_loops, benchmark, kernels
import main
from betavae.speed import switches as performance
from params import Params, UserError, build_params

PLAIN = dataclasses.replace(Params(), batch_size=8, lr=1e-3, **benchmark.PLAIN)


@pytest.fixture(scope="module")
def images():
    return bench_loops.prepare_data(32, seed=0, device=torch.device("cpu"))[0]


@pytest.fixture(scope="module")
def plain_losses(images):
    return losses_of(PLAIN, images)


@pytest.fixture(autouse=True)
def restore_process_settings():
    """The switches set process-wide state; put it back so other tests run as they would alone."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def losses_of(params, images, steps=2):
    """Per-step losses of main.train_step under `params`, on a fixed batch sequence and a fixed noise seed."""
    loop = bench_loops.Ours(images, dataclasses.replace(params, log_every=1), torch.device("cpu"), seed=0)
    loop.run(steps)
    return loop.losses


def test_bench_writes_its_figures_as_yaml(tmp_path, capsys):
    out = tmp_path / "bench.yaml"
    assert bench.main_bench(["--device", "cpu", "--batch-size", "4", "--steps", "1", "--windows", "3",
                             "--warmup", "1", "--images", "16", "--out", str(out)]) == 0
    record = yaml.safe_load(out.read_text())
    result = record["results"][4]
    # Each loop ran in a process of its own, so ours' process-wide settings never reached the reference.
    assert list(result)[:3] == list(bench_loops.LOOP_NAMES)
    assert len({result[name]["pid"] for name in bench_loops.LOOP_NAMES} | {os.getpid()}) == 4
    for name in bench_loops.LOOP_NAMES:
        figures = result[name]
        assert len(figures["window_steps_per_s"]) == 3
        assert figures["steps_per_s"] == pytest.approx(sorted(figures["window_steps_per_s"])[1], abs=0.01)
        assert figures["images_per_s"] == pytest.approx(figures["steps_per_s"] * 4, abs=0.1)
        assert figures["host_rss_mib"] > 0 and figures["warmup_s"] > 0 and figures["cpu_ms_per_step"] > 0
    assert result["ratio"] == pytest.approx(result["ours"]["steps_per_s"] / result["reference"]["steps_per_s"],
                                            abs=0.01)
    assert result["ratio_cpu_time"] == pytest.approx(
        result["reference"]["cpu_ms_per_step"] / result["ours"]["cpu_ms_per_step"], abs=0.02)
    assert result["ratio_keep_freed_memory"] == pytest.approx(
        result["ours"]["steps_per_s"] / result["reference + keep_freed_memory"]["steps_per_s"], abs=0.01)
    assert record["settings"] == performance.resolve(Params(device="cpu"), "cpu")
    assert record["data"]["subset_images"] == 16 and record["device"] == "cpu" and "cores" in record["hardware"]
    assert all(torch.isfinite(torch.tensor(v)) for v in result["final_loss"].values())
    table = capsys.readouterr().out
    assert "| 4 | reference |" in table and "| 4 | reference + keep_freed_memory |" in table
    assert "| 4 | ours |" in table and str(out) in table


def test_bench_rejects_a_bad_setting_in_one_sentence(tmp_path, capsys):
    assert bench.main_bench(["--device", "cpu", "--set", "cuda_graphs=true", "--out", str(tmp_path / "b.yaml")]) == 2
    assert "cuda_graphs" in capsys.readouterr().err and not (tmp_path / "b.yaml").exists()


def test_reference_and_ours_train_the_same_model_on_the_same_data(images):
    params = dataclasses.replace(Params(), batch_size=4)
    reference, ours = bench_loops.Reference(images, params, torch.device("cpu"), 3), bench_loops.Ours(images, params, "cpu", 3)
    assert reference.model.state_dict().keys() == ours.model.state_dict().keys()
    for name, value in reference.model.state_dict().items():
        assert torch.equal(value, ours.model.state_dict()[name]), name
    assert torch.equal(reference.loader.dataset.tensors[0], ours.images)
    assert reference.objective is ours.objective and ours.optimizer.defaults["lr"] == reference.optimizer.defaults["lr"]
    # Same data, same loss: their first losses are those of the same network on two draws from one set.
    reference.run(2), ours.run(2)
    assert ours.final_loss() == pytest.approx(reference.losses[-1], rel=0.2)


@pytest.mark.parametrize("switch, value, tolerance", [
    ("fused_adam", True, 1e-4),
    ("channels_last", True, 1e-4),
    ("fused_deconv", True, 1e-4),
    ("fused_conv", True, 1e-4),
    ("amp", "bf16", 2e-2),                # bf16 keeps 8 bits of mantissa: ~0.4% per operation
])
def test_each_switch_trains_like_plain_fp32(images, plain_losses, switch, value, tolerance):
    switched = losses_of(dataclasses.replace(PLAIN, **{switch: value}), images)
    assert len(plain_losses) == len(switched) == 2
    assert switched == pytest.approx(plain_losses, rel=tolerance)
    assert plain_losses[0] != plain_losses[1]  # the step really trained: a frozen model would pass any tolerance


def test_switches_change_the_model_and_optimiser_they_claim_to(images):
    loop = bench_loops.Ours(images, dataclasses.replace(PLAIN, channels_last=True, fused_adam=True, fused_deconv=True,
                                                        fused_conv=True), "cpu", seed=0)
    assert loop.model.encoder.convs[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert type(loop.model.decoder.deconvs) is kernels.FusedDeconvs
    assert type(loop.model.encoder.convs) is kernels.FusedConvs
    assert loop.optimizer.defaults["fused"] is True
    x = performance.to_memory_format(torch.zeros(2, 3, 8, 8), loop.params)  # RGB: with 1 channel both layouts agree
    assert x.stride() == (192, 1, 24, 3)  # NHWC
    assert performance.to_memory_format(torch.zeros(2, 3, 8, 8), PLAIN).stride() == (192, 64, 8, 1)  # NCHW
    with performance.autocast(images, dataclasses.replace(PLAIN, amp="bf16")):
        assert loop.model.encoder.fc[0](torch.ones(2, 512)).dtype == torch.bfloat16
    plain = bench_loops.Ours(images, PLAIN, "cpu", seed=0).model
    assert type(plain.decoder.deconvs) is torch.nn.Sequential and type(plain.encoder.convs) is torch.nn.Sequential
    # The reference loop is torch's own: none of ours' kernels, whatever the params say (auto turns them on).
    reference = bench_loops.Reference(images, Params(), "cpu", seed=0)
    assert type(reference.model.decoder.deconvs) is torch.nn.Sequential
    assert type(reference.model.encoder.convs) is torch.nn.Sequential


def test_auto_resolves_per_device_and_explicit_values_win():
    auto_cpu = {name: performance.auto_value("cpu", name) for name in performance.SWITCHES}
    assert performance.resolve(Params(), "cpu") == {**auto_cpu, "threads": 0} and auto_cpu["amp"] is False
    assert performance.resolve(Params(compile=True, amp="bf16"), "cpu")["compile"] is True
    assert performance.resolve(Params(amp="bf16"), "cpu")["amp"] == "bf16"
    with pytest.raises(UserError, match="needs compile"):
        performance.resolve(Params(compile=False, cuda_graphs=True), "cuda")


def test_switch_params_take_yaml_spellings_and_reject_others():
    params = build_params(assignments=["compile=on", "channels_last=false", "amp=bf16", "threads=1"])
    assert params.compile is True and params.channels_last is False and params.amp == "bf16" and params.threads == 1
    with pytest.raises(UserError, match="choose one of: auto, bf16, false"):
        build_params(assignments=["amp=fp16"])
    with pytest.raises(UserError, match="compile"):
        build_params(assignments=["compile=fast"])
    with pytest.raises(UserError, match="threads"):
        build_params(assignments=["threads=-1"])


def test_a_run_records_its_resolved_speed_settings(tmp_path):
    argv = ["--set", f"out_dir={tmp_path}", "--set", f"data_dir={tmp_path}", "--set", "run_name=r", "--set",
            "steps=2", "--set", "batch_size=4", "--set", "sample_every=100", "--set", "traverse_samples=8",
            "--set", "device=cpu", "--set", "channels_last=true", "--set", "threads=1",
            "--set", "metrics=false", "--set", "factor_samples=0"]
    assert main.main(argv) == 0
    record = yaml.safe_load((tmp_path / "r" / "params.yaml").read_text())
    assert record["params"]["channels_last"] is True and record["params"]["compile"] == "auto"
    auto_cpu = {name: performance.auto_value("cpu", name) for name in performance.SWITCHES}
    assert record["performance"] == {**auto_cpu, "channels_last": True, "threads": 1}


def test_compile_wraps_the_model_in_place_and_keeps_its_checkpoint_keys():
    """Compiling takes about a minute on 2 cores, so its numerics are checked by bench.py --check-numerics;
    here: the switch compiles the model without renaming its weights (checkpoints stay loadable)."""
    from models import VAE

    model = VAE()
    keys = list(model.state_dict())
    performance.prepare(model, dataclasses.replace(PLAIN, compile=True), "cpu")
    assert model._compiled_call_impl is not None and list(model.state_dict()) == keys
    assert performance.prepare(VAE(), PLAIN, "cpu") == {**benchmark.PLAIN, "threads": 0}


def test_check_numerics_compares_each_switch_with_plain_fp32(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "NUMERICS", {"plain fp32": {}, "plain fp32, 1 thread": {"threads": 1},
                                            "fused_adam": {"fused_adam": True}, "amp bf16": {"amp": "bf16"}})
    out, threads = tmp_path / "numerics.yaml", torch.get_num_threads()
    assert bench.main_bench(["--device", "cpu", "--check-numerics", "--numerics-steps", "3", "--images", "16",
                             "--set", "batch_size=4", "--set", "log_every=2", "--out", str(out)]) == 0
    record = yaml.safe_load(out.read_text())
    numerics = record["numerics"]
    assert record["numerics_lr"] == benchmark.NUMERICS_LR  # the check's own lr unless --set lr= is given
    assert torch.get_num_threads() == threads            # the 1-thread row did not leak into the rows after it
    assert list(numerics) == ["plain fp32", "plain fp32, 1 thread", "fused_adam", "amp bf16"]
    assert numerics["plain fp32, 1 thread"]["relative_difference"] < 1e-4
    assert numerics["plain fp32"]["relative_difference"] == 0
    assert numerics["fused_adam"]["relative_difference"] < 1e-4
    assert 0 < numerics["amp bf16"]["relative_difference"] < 0.02  # bf16 changes the arithmetic, a little
    assert "relative difference to plain fp32" in capsys.readouterr().out


def test_check_numerics_runs_only_the_switches_named(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "NUMERICS", {"plain fp32": {}, "fused_adam": {"fused_adam": True},
                                            "amp bf16": {"amp": "bf16"}, "ours (auto)": None})
    out = tmp_path / "numerics.yaml"
    assert bench.main_bench(["--device", "cpu", "--check-numerics", "amp", "--numerics-steps", "2", "--images", "16",
                             "--set", "batch_size=4", "log_every=1", "--out", str(out)]) == 0
    assert list(yaml.safe_load(out.read_text())["numerics"]) == ["plain fp32", "amp bf16", "ours (auto)"]


def test_cpu_bf16_auto_follows_amx(monkeypatch):
    """auto picks bf16 on a CPU only where AMX runs it (measured 1.65x the reference); elsewhere, or on a torch without the
    probe, it stays fp32."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert performance.cpu_has_amx() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert performance.cpu_has_amx() is False
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert performance.cpu_has_amx() is False


@pytest.mark.parametrize("fast, float32, bf16, chosen", [(True, 20.0, 23.0, "bf16"), (True, 20.0, 21.0, False),
                                                         (True, 20.0, 18.0, False), (False, 20.0, 40.0, False)])
def test_amp_auto_is_bf16_only_where_it_measures_ten_percent_faster(monkeypatch, fast, float32, bf16, chosen):
    measured = []
    monkeypatch.delenv("BETAVAE_AMP_AUTO", raising=False)
    monkeypatch.setattr(performance, "AMP_CHOICE", [])
    monkeypatch.setattr(performance, "cpu_has_fast_bf16", lambda: fast)
    monkeypatch.setattr(performance, "measure_amp_rates", lambda: measured.append(1) or (float32, bf16))
    assert performance.resolve(Params(), "cpu")["amp"] == chosen
    assert performance.resolve_one("amp", Params(), torch.device("cpu")) == chosen and len(measured) == int(fast)
    monkeypatch.setattr(performance, "AMP_CHOICE", [])
    monkeypatch.setenv("WORLD_SIZE", "2")                      # torchrun: every rank float32, nothing measured
    assert performance.auto_value("cpu", "amp") is False and len(measured) == int(fast)


def test_the_amp_measurement_times_both_precisions_in_about_a_second():
    import time

    start = time.perf_counter()
    float32, bf16 = performance.measure_amp_rates()
    assert float32 > 0 and bf16 > 0 and time.perf_counter() - start < 10  # ~1 s on 2 cores; generous for CI


@pytest.mark.parametrize("amx, avx512_bf16, fast", [(True, False, True), (False, True, True), (False, False, False)])
def test_fast_bf16_is_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, fast):
    """AVX-512 BF16 (AMD Zen 4, measured 1.40x the reference in bf16 against 1.07x in fp32) counts as AMX does;
    an AVX2-only CPU, or a torch without the probes, stays fp32."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert performance.cpu_has_fast_bf16() is fast
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert performance.cpu_has_fast_bf16() is False


def test_keep_freed_memory_stops_the_page_faults_of_a_step_like_alloc_free_cycle():
    """A step allocates and frees several 8 MiB activations; with freed memory kept, repeating that cycle
    touches pages already mapped instead of faulting them in again (glibc's defaults: 22% of them here).
    In a fresh process: page faults are counted per process, and earlier tests' threads add their own."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux with glibc")
    code = """
import resource, sys, torch
from betavae.speed import switches as performance
if not performance.keep_freed_memory():
    print("skip"); sys.exit()
def cycle():
    blocks = [torch.empty(2 << 20).fill_(1.0) for _ in range(6)]  # 6 x 8 MiB, each page written
    del blocks
cycle()
counts = []
for _ in range(3):  # the least of three rounds: the kernel may fault a page in for its own reasons under load
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        cycle()
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(counts))
"""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    if out[-1:] == ["skip"]:
        pytest.skip("needs glibc")
    faults, pages = int(out[-1]), 10 * 6 * (8 << 20) // 4096
    assert faults < 0.05 * pages, f"{faults} page faults for {pages} pages written"


def test_a_loop_that_fails_in_its_process_stops_the_benchmark_with_its_error():
    """A loop's process reports its exception; the parent raises it with the loop's name instead of hanging."""
    params = dataclasses.replace(PLAIN, batch_size=16)
    loop = bench_loops.LoopProcess("reference", params, torch.device("cpu"), count=8, seed=0)  # no full batch of 16
    try:
        with pytest.raises(RuntimeError, match="reference loop failed: StopIteration"):
            loop.ask("time", 1)
    finally:
        loop.close()
    assert not loop.process.is_alive()


def test_the_float32_stacks_leave_bf16_training_bit_for_bit_unchanged(images):
    """fused_conv runs only in float32, and fused_deconv only its output layer under amp: under bf16 autocast the
    encoder's layers run as usual, so three bf16 steps leave the very same weights with fused_conv on or off."""
    weights = []
    for fused in (False, True):
        loop = bench_loops.Ours(images, dataclasses.replace(PLAIN, amp="bf16", fused_deconv=True, fused_conv=fused),
                                "cpu", seed=0)
        loop.run(3)
        weights.append(loop.model.state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    initial = bench_loops.Ours(images, PLAIN, "cpu", seed=0).model.state_dict()
    assert not torch.equal(weights[0]["encoder.convs.0.weight"], initial["encoder.convs.0.weight"])  # it did train


def test_bench_disk_times_memory_against_the_memory_mapped_file_window_by_window(tmp_path, capsys):
    out = tmp_path / "disk.yaml"
    assert bench.main_bench(["--device", "cpu", "--disk", "300", "--batch-size", "8", "--steps", "2", "--windows", "2",
                             "--warmup", "0", "--images", "16", "--set", f"out_dir={tmp_path}", "--out", str(out)]) == 0
    disk = yaml.safe_load(out.read_text())["disk"]
    assert disk["images"] == 300 and len(disk["window_steps_per_s"]["disk"]) == 2
    assert disk["memory_steps_per_s"] > 0 and disk["disk_steps_per_s"] > 0 and disk["page_cache_dropped"]
    assert not list(tmp_path.glob("tmp*"))                  # the scratch file is gone
    assert "memory-mapped, from disk" in capsys.readouterr().out
