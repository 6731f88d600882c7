import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from dvla_hpc.output.telemetry import Telemetry, TelemetrySample, nvml_target


def nvidia_gpu() -> str:
    """Why there is no NVIDIA GPU to watch, or "" when there is one."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as exc:
        return f"needs an NVIDIA GPU (NVML: {exc or type(exc).__name__})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "needs an NVIDIA GPU (NVML sees none)"
        if nvml_target(0, os.environ.get("CUDA_VISIBLE_DEVICES")) is None:
            return "needs an NVIDIA GPU (CUDA_VISIBLE_DEVICES hides them)"
        return ""
    finally:
        pynvml.nvmlShutdown()


NO_GPU = nvidia_gpu()
# spins until this process has used `seconds` of CPU, however busy the machine is
BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def burn(seconds: float) -> None:
    exec(BURN.format(seconds=seconds))


def close_to(measured: float, expected: float) -> bool:
    """Within 20% (the kernel counts CPU time in 10 ms ticks), or 5 points of a core."""
    return abs(measured - expected) <= max(5.0, 0.2 * expected)


PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


@pytest.fixture
def telemetry():
    watch = Telemetry(None)
    yield watch
    watch.close()


@pytest.fixture(params=["proc children", "psutil"])
def listing(request, telemetry):
    """Telemetry that finds descendants by each way it knows."""
    if request.param == "proc children" and not PROC_CHILDREN:
        pytest.skip("the kernel has no /proc/<pid>/task/<tid>/children")
    telemetry._fast_children = request.param == "proc children"
    return telemetry


def test_cpu_share_rises_while_burning_and_stays_low_while_sleeping(telemetry):
    # compared with the OS's own count, since other processes may share the cores
    telemetry.sample()
    wall, cpu = time.perf_counter(), time.process_time()
    burn(0.4)
    busy = telemetry.sample().cpu_percent
    expected = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
    assert close_to(busy, expected), (busy, expected)
    time.sleep(0.4)
    idle = telemetry.sample().cpu_percent
    assert idle < 10 and busy > idle + 10, (busy, idle)


def test_rss_rises_after_touching_200_mib(telemetry):
    before = telemetry.sample().rss_mib
    block = np.ones(200 * 2**20, dtype=np.uint8)  # written, so every page is resident
    after = telemetry.sample().rss_mib
    assert after - before > 180, (before, after)
    del block


def test_cpu_of_descendants_counts_while_they_run_and_after_they_exit(listing):
    # the child only waits; its own child (our grandchild) burns 0.6 s of CPU and exits
    script = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN.format(seconds=0.6)!r}])"
    child = subprocess.Popen([sys.executable, "-c", script])
    listing.sample()
    last, live_seconds, with_children = time.perf_counter(), 0.0, 0.0
    while child.poll() is None:
        time.sleep(0.1)
        sample = listing.sample()
        now = time.perf_counter()
        live_seconds += sample.cpu_percent / 100 * (now - last)
        last = now
        with_children = max(with_children, sample.rss_mib - psutil.Process().memory_info().rss / 2**20)
    final = listing.sample()  # the child is reaped: its CPU moved into our own counters
    total_seconds = live_seconds + final.cpu_percent / 100 * (time.perf_counter() - last)
    assert live_seconds > 0.4, live_seconds  # seen while running, two levels down
    assert 0.55 < total_seconds < 1.5, total_seconds  # 0.6 s burnt + two interpreter start-ups, once
    assert with_children > 5  # their interpreters' memory too


def test_children_that_come_and_go_while_sampling_never_raise(listing):
    for _ in range(20):
        quick = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(3)]
        listing.sample()
        for proc in quick:
            proc.wait(timeout=30)
    assert listing.summary()["samples"] == 20


@pytest.mark.skipif(not PROC_CHILDREN, reason="the kernel has no /proc/<pid>/task/<tid>/children")
def test_fast_child_listing_matches_psutil(telemetry):
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"
    children = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    try:
        time.sleep(1.0)  # the grandchildren start
        ours = {child.pid for child in children}
        ours |= {p.pid for child in children for p in psutil.Process(child.pid).children(recursive=True)}
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        listed = {p.pid for p in telemetry._descendants()}
        after = {p.pid for p in psutil.Process().children(recursive=True)}
        # other tests may leave short-lived processes of their own beside ours
        assert len(ours) == 4 and ours <= listed and before & after <= listed <= before | after
    finally:
        for child in children:
            for proc in psutil.Process(child.pid).children(recursive=True) + [child]:
                proc.kill()
            child.wait()


def test_no_gpu_is_none_with_a_reason_and_minus_one(telemetry, monkeypatch):
    sample = telemetry.sample()
    assert (sample.gpu_util_percent, sample.gpu_mem_used_mib, sample.gpu_mem_total_mib) == (-1, -1, -1)
    assert telemetry.gpu == "none"
    summary = telemetry.summary()
    assert summary["gpu"].startswith("none (") and summary["gpu_util_percent_mean"] == -1
    assert summary["gpu_mem_used_mib_max"] == -1 and summary["rss_mib_max"] > 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    hidden = Telemetry(0)  # no GPU visible to CUDA: not an error
    assert hidden.gpu == "none" and "CUDA_VISIBLE_DEVICES" in hidden.summary()["gpu"]
    hidden.close()
    hidden.close()


@pytest.mark.skipif(not NO_GPU, reason="this host has an NVIDIA GPU")
def test_gpu_index_without_nvml_gives_none_not_an_error(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    watch = Telemetry(0)
    assert watch.gpu == "none" and watch.summary()["gpu"].startswith("none (no NVIDIA GPU")
    assert watch.sample().gpu_mem_used_mib == -1
    watch.close()


def test_cuda_visible_devices_maps_to_nvml_devices():
    assert nvml_target(1, None) == 1
    assert nvml_target(1, "3,5") == 5
    assert nvml_target(0, " GPU-8932f937 ,2") == "GPU-8932f937"
    assert nvml_target(2, "3,5") is None
    assert nvml_target(0, "") is None
    assert nvml_target(1, "0,-1,1") is None  # CUDA stops at the first invalid entry


def test_sample_round_trips_through_a_tuple():
    sample = TelemetrySample(123.4, 2048.5, 87.0, 1000.0, 81559.0)
    assert TelemetrySample.FIELDS == ("cpu_percent", "rss_mib", "gpu_util_percent",
                                      "gpu_mem_used_mib", "gpu_mem_total_mib")
    values = sample.as_tuple()
    assert len(values) == len(TelemetrySample.FIELDS) and all(type(v) is float for v in values)
    assert TelemetrySample.from_tuple(values) == sample
    with pytest.raises(ValueError):
        TelemetrySample.from_tuple(values[:-1])


def test_summary_spans_the_samples(telemetry):
    telemetry.sample()
    wall, cpu = time.perf_counter(), time.process_time()
    burn(0.2)
    telemetry.sample()
    time.sleep(0.2)
    telemetry.sample()
    expected = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
    summary = telemetry.summary()
    assert summary["samples"] == 3 and close_to(summary["cpu_percent_mean"], expected), (summary, expected)


@pytest.mark.skipif(not PROC_CHILDREN, reason="psutil's fallback reads every process on the node")
def test_sampling_is_cheap(telemetry):
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(8)]
    try:
        telemetry.sample()
        start = time.process_time()  # CPU time: other processes may share the cores
        for _ in range(50):
            telemetry.sample()
        assert (time.process_time() - start) / 50 < 2e-3
    finally:
        for child in children:
            child.kill()
            child.wait()


@pytest.mark.gpu
@pytest.mark.skipif(bool(NO_GPU), reason=NO_GPU or "has a GPU")
def test_real_nvml_figures():
    torch = pytest.importorskip("torch")
    watch = Telemetry(0)
    try:
        sample = watch.sample()
        assert watch.gpu != "none" and watch.summary()["gpu"] == watch.gpu
        assert 0 <= sample.gpu_util_percent <= 100
        assert 0 <= sample.gpu_mem_used_mib <= sample.gpu_mem_total_mib
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            total = props.total_memory / 2**20
            assert abs(sample.gpu_mem_total_mib - total) < 0.05 * total
            assert watch._nvml.nvmlDeviceGetUUID(watch._handle).endswith(str(props.uuid))  # the same device
            block = torch.ones(1024 * 2**20, dtype=torch.uint8, device="cuda:0")
            assert block.is_cuda
            torch.cuda.synchronize()
            grown = watch.sample().gpu_mem_used_mib - sample.gpu_mem_used_mib
            assert grown > 900, grown  # 1 GiB more used on the device (plus the CUDA context)
            del block
    finally:
        watch.close()
    assert watch.sample().gpu_mem_used_mib == -1  # closed: no more GPU figures, no error
