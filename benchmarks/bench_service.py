"""Inference over HTTP with a warm server: `breastcad serve` in its own process, real uploads
(multipart PNG), single-client latency p50/p99 and throughput with 8 concurrent clients, for
`idc_cnn` (50x50) and EfficientNet-Lite0 (`transfer`, ImageNet weights) at 224 px, on PyTorch
and on ONNX Runtime. The reference, measured in the same run: the same Predictor called
in-process (decode + predict, no HTTP), so the table shows what the service adds.

Goals from the issue: idc_cnn p50 <= 15 ms (the original Keras `predict` takes about 96 ms per
single image on this machine, as reported in the issue; TensorFlow is not installed here to
re-measure it) and EfficientNet-Lite0 at 224 p50 <= 40 ms. Client and server share the
machine's cores.

    .venv/bin/python benchmarks/bench_service.py [--requests 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from breastcad.bundle import untrained_image_bundle
from breastcad.data.imaging import decode_image
from breastcad.export import export_onnx
from breastcad.predict import Predictor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def sample_png(pattern: str, fallback: tuple[int, ...]) -> bytes:
    found = sorted(DATA.rglob(pattern))[:1]
    if found:
        return found[0].read_bytes()
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, fallback, dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bundle: Path, runtime: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "breastcad", "serve", "--model", str(bundle)]
        args += ["--runtime", runtime, "--port", str(self.port)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> Server:
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode())
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def timed_requests(url: str, data: bytes, n: int) -> list[float]:
    times = []
    with httpx.Client() as client:
        for _ in range(n):
            start = time.perf_counter()
            response = client.post(f"{url}/api/v1/predict", files={"file": ("x.png", data)})
            times.append(time.perf_counter() - start)
            response.raise_for_status()
    return times


def concurrent(url: str, data: bytes, clients: int, each: int) -> tuple[float, list[float]]:
    results: list[list[float]] = [[] for _ in range(clients)]

    def work(i: int) -> None:
        results[i] = timed_requests(url, data, each)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return clients * each / elapsed, [t for r in results for t in r]


def pct(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000, q))


def in_process(bundle: Path, data: bytes, n: int) -> float:
    predictor = Predictor.from_bundle(bundle)
    for _ in range(10):
        predictor.predict_image(decode_image(data))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        predictor.predict_image(decode_image(data))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    cases = [
        ("idc_cnn", "idc_cnn", 50, ["benign", "idc"], 3, "*_class1.png", (50, 50, 3), 15),
        (
            "EfficientNet-Lite0 224",
            "transfer",
            224,
            ["normal", "benign", "malignant"],
            1,
            "malignant (1).png",
            (480, 560),
            40,
        ),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, size, classes, channels, pattern, fallback, goal in cases:
            # latency does not depend on what a head learned: an untrained bundle will do
            bundle = untrained_image_bundle(Path(tmp) / model, model, classes, size, channels)
            export_onnx(bundle)
            data = sample_png(pattern, fallback)
            n = args.requests if size <= 64 else max(50, args.requests // 2)
            reference = in_process(bundle, data, n)
            for runtime in ("torch", "onnx"):
                with Server(bundle, runtime) as server:
                    timed_requests(server.url, data, 20)  # warm-up
                    single = timed_requests(server.url, data, n)
                    rate, loaded = concurrent(
                        server.url, data, args.concurrency, max(5, n // args.concurrency)
                    )
                rows.append(
                    (
                        label,
                        runtime,
                        pct(single, 50),
                        pct(single, 99),
                        rate,
                        pct(loaded, 50),
                        pct(loaded, 99),
                        reference,
                        goal,
                    )
                )
                print(f"measured {label} {runtime}", file=sys.stderr)
    print(
        "| model | runtime | p50 ms | p99 ms | images/s, 8 clients | p50 / p99 ms under load "
        "| in-process ms (torch) | p50 / in-process | goal p50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, runtime, p50, p99, rate, lp50, lp99, ref, goal in rows:
        met = "met" if p50 <= goal else "not met"
        print(
            f"| {label} | {runtime} | {p50:.1f} | {p99:.1f} | {rate:.1f} | {lp50:.0f} / {lp99:.0f} "
            f"| {ref:.1f} | {p50 / ref:.2f}x | <= {goal} ms ({met}) |"
        )


if __name__ == "__main__":
    main()
