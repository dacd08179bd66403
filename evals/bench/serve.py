"""`rag bench --parts serve`: what the HTTP server (`rag serve`) costs and gives, measured in one run.

The layering keeps `evals` away from `rag.server` and `rag.cli`, so the server runs as a subprocess
(`python -m rag.cli serve`) configured through `RAG_*` environment variables, and the bench talks to it
with httpx on 127.0.0.1 only. Qdrant Edge locks a store to one process, so the bench builds one
collection (real SQuAD chunks + synthetic filler), closes it and copies its folders: the server owns
copy A, the in-process `Pipeline` (and later the cold CLI) copy B, same points in both.

Figures (all loops bounded in count and time):
- `overhead`: hybrid search through `POST /api/v1/search` vs `Pipeline.search` in this process, in
  alternating blocks of the same questions; p50/p95 of both, their differences, the paired per-question
  difference, and the API wall time minus the server's own `timings_ms.total` (HTTP + JSON cost alone).
- `concurrency`: throughput and p95 with 1, 4 and 16 client threads (one httpx client each).
- `ingest_load`: query p95 while an ingest job (`POST /api/v1/ingest` of a folder under the server's
  --ingest-root) runs, and its ratio to the idle p95 measured just before.
- `ask`: `rag ask` wall time through the warm server (`--server URL` subprocess, and the bare
  `POST /api/v1/ask`) vs a cold CLI (`rag ask --no-server` subprocess that loads its models).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from evals.bench.data import Vocabulary
from evals.bench.measure import ms_since, ratio, stats_ms
from rag.config import Settings
from rag.errors import RagError
from rag.pipeline import Pipeline

HOST = "127.0.0.1"
API = "/api/v1"


@dataclass
class ServeConfig:
    """Request counts and time bounds of the serve part; `quick()` is the smoke-test variant."""

    docs: int = 6  # SQuAD docs ingested into the bench collection (smallest first)
    pad_to: int = 10_000  # collection size (real chunks + synthetic filler)
    overhead_queries: int = 100  # per side, in alternating blocks
    block: int = 10
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests_per_level: int = 160  # total requests per concurrency level (split over the clients)
    idle_queries: int = 60
    ingest_docs: int = 20  # SQuAD docs in the folder ingested through the API while querying
    ingest_max_queries: int = 2_000
    ingest_max_s: float = 300.0
    ask_warm: int = 3
    ask_cold: int = 2
    server_start_timeout_s: float = 300.0
    request_timeout_s: float = 120.0
    ingest_max_chars: int | None = None  # cut docs to this many characters (quick runs)

    @classmethod
    def quick(cls) -> "ServeConfig":
        """Small sizes for a smoke test (a couple of minutes on 2 busy cores)."""
        return cls(docs=1, pad_to=400, overhead_queries=8, block=4, requests_per_level=16, idle_queries=8,
                   ingest_docs=3, ingest_max_queries=200, ingest_max_s=90.0, ask_warm=1, ask_cold=1,
                   ingest_max_chars=6000)


# -- settings, processes ------------------------------------------------------------------------------
def settings_env(settings: Settings) -> dict[str, str]:
    """The `RAG_*` variables that reproduce `settings` in a subprocess (None values and `watch` left out)."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None or f.name == "watch":
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            if not all(isinstance(v, (str, int, float)) for v in value):
                continue
            text = ",".join(str(v) for v in value)
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            continue
        env[f"RAG_{f.name.upper()}"] = text
    return env


def subprocess_env(settings: Settings) -> dict[str, str]:
    """This process's environment minus any RAG_* (and a server URL), plus the settings' RAG_* values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k in ("RAG_EVALDATA", "RAG_BENCH_MODEL")}
    env.update(settings_env(settings))
    env.pop("RAG_SERVER_URL", None)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return env


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m rag.cli serve` on 127.0.0.1 as a subprocess; `stop()` sends SIGTERM (then SIGKILL)."""

    def __init__(self, settings: Settings, workdir: Path, ingest_root: Path, timeout_s: float) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = workdir / "serve.log"
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "rag.cli", "serve", "--host", HOST, "--port", str(self.port),
               "--ingest-root", str(ingest_root)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=str(workdir), env=subprocess_env(settings), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_s = round(time.perf_counter() - t0, 2)

    def _wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RagError(f"bench serve: the server exited with code {self.proc.returncode}; "
                               f"its log ends with: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{API}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RagError(f"bench serve: the server did not answer {API}/health within {timeout_s:.0f} s; "
                       f"its log ends with: {self.log_tail()}")

    def log_tail(self, chars: int = 800) -> str:
        """The end of the server's log (stdout + stderr)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL after 60 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


# -- building the bench collection --------------------------------------------------------------------
def build_collection(settings: Settings, embedder: Any, files: Sequence[Path], vocab: Vocabulary, pad_to: int,
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """Ingest `files` into the collection of `settings`, pad it with synthetic chunks to `pad_to`, close it."""
    from evals.bench.parts import pad_collection

    pipe = Pipeline(settings, embedder=embedder)
    try:
        report = pipe.ingest([str(f) for f in files], progress=False)
        if report.failed:
            raise RagError(f"bench serve: {report.failed} file(s) failed to ingest: {report.failures[:3]}")
        info = pad_collection(pipe.store, vocab, pad_to, embedder.dimension, np.random.default_rng(11), progress)
        info["ingest_s"] = round(report.seconds, 2)
        return info
    finally:
        pipe.close()


def copy_store(src: Settings, dst: Settings) -> None:
    """Copy a closed store and its state folder (manifest) to the paths of `dst`."""
    shutil.copytree(src.qdrant_path, dst.qdrant_path)
    if Path(src.state_dir).is_dir():
        shutil.copytree(src.state_dir, dst.state_dir, ignore=shutil.ignore_patterns("server.json", "*.lock"))


# -- measurements -------------------------------------------------------------------------------------
def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 3) for v in values]


def api_search(client: Any, url: str, question: str, k: int = 10) -> dict[str, Any]:
    """One hybrid search through the API; raises on any non-200 answer."""
    resp = client.post(f"{url}{API}/search", json={"query": question, "k": k, "mode": "hybrid"})
    if resp.status_code != 200:
        raise RagError(f"bench serve: POST {API}/search answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()


def measure_overhead(pipe: Pipeline, client: Any, url: str, questions: Sequence[str], n: int, block: int,
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """Hybrid search in-process vs through the API, in alternating blocks of the same questions."""
    qs = [questions[i % len(questions)] for i in range(n)]
    for q in qs[:2]:  # warm-up on both sides
        pipe.search(q, k=10, mode="hybrid")
        api_search(client, url, q)
    progress(f"serve: overhead, {n} hybrid searches per side in blocks of {block}")
    inproc: list[float] = []
    api: list[float] = []
    server_total: list[float] = []
    for start in range(0, n, block):
        batch = qs[start:start + block]
        # Alternate which side goes first, so a load change hits both alike.
        sides = ("inproc", "api") if (start // block) % 2 == 0 else ("api", "inproc")
        for side in sides:
            for q in batch:
                t0 = time.perf_counter()
                if side == "inproc":
                    pipe.search(q, k=10, mode="hybrid")
                    inproc.append(ms_since(t0))
                else:
                    body = api_search(client, url, q)
                    api.append(ms_since(t0))
                    server_total.append(float(body.get("timings_ms", {}).get("total", float("nan"))))
    inproc_r, api_r = _rounded(inproc), _rounded(api)
    s_in, s_api = stats_ms(inproc_r), stats_ms(api_r)
    paired = [a - b for a, b in zip(api_r, inproc_r)]
    http_only = [a - s for a, s in zip(api_r, server_total) if s == s]
    return {
        "queries_per_side": len(inproc_r), "block": block, "mode": "hybrid", "k": 10,
        "inproc_ms": s_in, "api_ms": s_api,
        "overhead_p50_ms": round(s_api["p50"] - s_in["p50"], 3),
        "overhead_p95_ms": round(s_api["p95"] - s_in["p95"], 3),
        "paired_overhead_ms": stats_ms(paired),
        "api_minus_server_total_ms": stats_ms(http_only),
        "inproc_raw_ms": inproc_r, "api_raw_ms": api_r,
    }


def _client_loop(url: str, questions: Sequence[str], n: int, deadline: float, timeout_s: float,
                 out: list[float], errors: list[str], barrier: threading.Barrier) -> None:
    import httpx

    with httpx.Client(timeout=timeout_s) as client:
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        for i in range(n):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                api_search(client, url, questions[i % len(questions)])
            except Exception as exc:  # noqa: BLE001 - recorded, reported, not fatal
                errors.append(str(exc)[:200])
                continue
            out.append(ms_since(t0))


def measure_concurrency(url: str, questions: Sequence[str], clients: int, total: int, max_s: float,
                        timeout_s: float) -> dict[str, Any]:
    """`clients` threads, each with its own httpx client, share `total` requests; throughput and latency."""
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    results: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    deadline = time.monotonic() + max_s
    threads = [threading.Thread(target=_client_loop, args=(url, questions[i:] + questions[:i], per[i], deadline,
                                                           timeout_s, results[i], errors, barrier), daemon=True)
               for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait(timeout=60)
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=max_s + timeout_s + 10)
    wall = round(time.perf_counter() - t0, 3)
    lat = _rounded([v for r in results for v in r])
    return {"clients": clients, "requests": total, "completed": len(lat), "errors": len(errors),
            "error_samples": errors[:3], "wall_s": wall,
            "throughput_rps": round(len(lat) / max(wall, 1e-3), 2), "latency_ms": stats_ms(lat)}


def _sequential(client: Any, url: str, questions: Sequence[str], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        api_search(client, url, questions[i % len(questions)])
        out.append(ms_since(t0))
    return _rounded(out)


def measure_ingest_load(client: Any, url: str, questions: Sequence[str], folder: Path, cfg: ServeConfig,
                        progress: Callable[[str], None]) -> dict[str, Any]:
    """Idle p95, then p95 of sequential searches while an API ingest job of `folder` runs."""
    idle = _sequential(client, url, questions, cfg.idle_queries)
    resp = client.post(f"{url}{API}/ingest", json={"paths": [str(folder)]})
    if resp.status_code != 202:
        raise RagError(f"bench serve: POST {API}/ingest answered {resp.status_code}: {resp.text[:300]}")
    job_id = resp.json()["job_id"]
    progress(f"serve: querying while ingest job {job_id} runs ({len(list(folder.iterdir()))} files)")
    t_start = time.monotonic()
    during: list[float] = []
    state = "queued"
    job: dict[str, Any] = {}
    last_poll = 0.0
    i = 0
    while len(during) < cfg.ingest_max_queries and time.monotonic() - t_start < cfg.ingest_max_s:
        now = time.monotonic()
        if now - last_poll > 0.5:
            job = client.get(f"{url}{API}/jobs/{job_id}").json()
            state = job.get("state", "?")
            last_poll = now
            if state in ("done", "failed", "cancelled"):
                break
        if state == "queued":  # not started yet: those queries would not be "during ingest"
            time.sleep(0.05)
            continue
        t0 = time.perf_counter()
        api_search(client, url, questions[i % len(questions)])
        during.append(ms_since(t0))
        i += 1
    # Bounded: a job still running when the query window ends gets 120 s more with no queries (a background
    # job yields the CPU to searches, so it may have made little progress while they ran), then is cancelled
    # and waited for (so the store is consistent).
    cancelled = False
    wait_until = time.monotonic() + 120
    while state not in ("done", "failed", "cancelled"):
        if time.monotonic() >= wait_until:
            if cancelled:
                break
            client.post(f"{url}{API}/jobs/{job_id}/cancel")
            cancelled, wait_until = True, time.monotonic() + 120
        time.sleep(0.5)
        job = client.get(f"{url}{API}/jobs/{job_id}").json()
        state = job.get("state", "?")
    during_r = _rounded(during)
    s_idle, s_during = stats_ms(idle), stats_ms(during_r)
    return {"idle_ms": s_idle, "during_ingest_ms": s_during,
            "p95_ratio": ratio(s_during["p95"], s_idle["p95"]) if during_r else None,
            "p50_ratio": ratio(s_during["p50"], s_idle["p50"]) if during_r else None,
            "job": {"id": job_id, "state": state, "files_total": job.get("files_total"),
                    "files_done": job.get("files_done"), "chunks_added": job.get("chunks_added"),
                    "seconds_queried": round(time.monotonic() - t_start, 2)},
            "idle_raw_ms": idle, "during_raw_ms": during_r}


def _run_cli(args: list[str], settings: Settings, cwd: Path, timeout_s: float) -> float:
    """Wall seconds of `python -m rag.cli ARGS` (raises with its stderr tail on a non-zero exit)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rag.cli", *args], cwd=str(cwd), env=subprocess_env(settings),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RagError(f"bench serve: rag {' '.join(args[:1])} exited {proc.returncode}: {proc.stderr[-500:]}")
    return wall


def measure_ask(client: Any, url: str, server_settings: Settings, cold_settings: Settings, questions: Sequence[str],
                cfg: ServeConfig, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """`rag ask` wall time: CLI through the warm server, bare API call, and a cold `--no-server` CLI."""
    progress(f"serve: rag ask, {cfg.ask_warm} through the warm server, {cfg.ask_cold} cold (--no-server)")
    qs = [questions[i % len(questions)] for i in range(max(cfg.ask_warm, cfg.ask_cold))]
    api_ms: list[float] = []
    for q in qs[: cfg.ask_warm]:
        t0 = time.perf_counter()
        resp = client.post(f"{url}{API}/ask", json={"question": q})
        if resp.status_code != 200:
            raise RagError(f"bench serve: POST {API}/ask answered {resp.status_code}: {resp.text[:300]}")
        api_ms.append(ms_since(t0))
    warm = [_run_cli(["ask", q, "--json", "--server", url], server_settings, workdir, cfg.request_timeout_s * 3)
            for q in qs[: cfg.ask_warm]]
    cold = [_run_cli(["ask", q, "--json", "--no-server"], cold_settings, workdir, 900.0) for q in qs[: cfg.ask_cold]]
    warm_r, cold_r = [round(v, 3) for v in warm], [round(v, 3) for v in cold]
    warm_med = float(np.median(warm_r)) if warm_r else None
    cold_med = float(np.median(cold_r)) if cold_r else None
    return {"warm_server_cli_s": warm_r, "cold_cli_s": cold_r, "api_ask_ms": stats_ms(_rounded(api_ms)),
            "warm_median_s": warm_med, "cold_median_s": cold_med,
            "cold_over_warm": ratio(cold_med, warm_med)}


# -- the part -----------------------------------------------------------------------------------------
def bench_serve(settings: Settings, embedder: Any, files: Sequence[Path], ingest_files: Sequence[Path],
                questions: Sequence[str], vocab: Vocabulary, cfg: ServeConfig, workdir: Path,
                progress: Callable[[str], None]) -> dict[str, Any]:
    """The serve part (see the module docstring); `files` build the collection, `ingest_files` are
    ingested through the API while querying. Returns a JSON-able dict."""
    import httpx

    root = Path(workdir) / "serve"
    root.mkdir(parents=True, exist_ok=True)
    base = settings.replace(collection="bench_serve", server_url=None) if hasattr(settings, "server_url") else \
        settings.replace(collection="bench_serve")
    # The per-key rate limit (server_rate_limit, default 20/s) is switched off: this measures capacity, not the limiter.
    server_s = base.replace(qdrant_path=str(root / "a_qdrant"), state_dir=str(root / "a_state"), server_rate_limit=0.0)
    local_s = base.replace(qdrant_path=str(root / "b_qdrant"), state_dir=str(root / "b_state"))
    progress(f"serve: building the bench collection ({len(files)} SQuAD docs + filler to {cfg.pad_to:,})")
    collection = build_collection(server_s, embedder, files, vocab, cfg.pad_to, progress)
    copy_store(server_s, local_s)
    ingest_root = root / "ingest_root"
    folder = ingest_root / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for f in ingest_files:
        text = f.read_text(encoding="utf-8")
        (folder / f.name).write_text(text[: cfg.ingest_max_chars] if cfg.ingest_max_chars else text, encoding="utf-8")

    out: dict[str, Any] = {"collection": collection, "host": HOST, "server_rate_limit": server_s.server_rate_limit,
                           "config": {k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in dataclasses.asdict(cfg).items()}}
    load_start = os.getloadavg()
    progress("serve: starting `rag serve` (subprocess) on the bench collection")
    server = ServerProcess(server_s, root, ingest_root, cfg.server_start_timeout_s)
    out["server_start_s"] = server.start_s
    pipe = Pipeline(local_s, embedder=embedder)
    try:
        with httpx.Client(timeout=cfg.request_timeout_s) as client:
            out["overhead"] = measure_overhead(pipe, client, server.url, questions, cfg.overhead_queries, cfg.block,
                                               progress)
            pipe.close()  # frees store B for the cold CLI below
            out["concurrency"] = []
            for clients in cfg.concurrency:
                progress(f"serve: {clients} concurrent client(s), {cfg.requests_per_level} requests")
                api_search(client, server.url, questions[0])
                out["concurrency"].append(measure_concurrency(server.url, list(questions), clients,
                                                              cfg.requests_per_level, cfg.ingest_max_s,
                                                              cfg.request_timeout_s))
            out["ingest_load"] = measure_ingest_load(client, server.url, questions, folder, cfg, progress)
            out["ask"] = measure_ask(client, server.url, server_s, local_s, questions, cfg, root, progress)
    finally:
        pipe.close()
        server.stop()
    out["load_avg"] = {"start": list(load_start), "end": list(os.getloadavg())}
    return out
