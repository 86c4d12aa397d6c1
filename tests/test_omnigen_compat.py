"""End to end: the real OmniGen (``omnigen-usf==0.1.18``) running on omnilimit's limiters.

OmniGen's text enhancement pipeline is run for real (its config, runner, thread pool, generator,
``openai`` provider over HTTP, validation and JSONL storage) against ``StubProvider``, a local
OpenAI-compatible server, after ``omnilimit.compat.patch_omnigen()``. Nothing needs MongoDB,
HuggingFace or the internet.

Why the text enhancement pipeline: its input is a JSONL file with a ``text`` column, it makes
exactly one chat completion per record (the stub's answers pass its default validation rules on the
first attempt), and it writes one output line per record; the conversation extension pipeline needs
two provider roles, multi-turn conversations and a reply format per role.

Every OmniGen run happens in a child interpreter, this file run as a script: OmniGen's runner
installs SIGINT/SIGTERM handlers and its modules reset the ``omnigen`` logger to print on stdout,
and the patch rebinds names in ``sys.modules``; none of that should leak into the pytest process.
The stub runs in the pytest process and records every request's arrival time and the requests in
flight then, which is what the assertions read.

Unpatched, omnigen 0.1.18 hangs after its first record whenever it builds a ``RateLimiter``
(``rate_limit_rpm`` set, or no limiter key at all): its progress display calls
``ProviderRateLimitManager.get_all_stats()``, which holds the manager's lock while
``RateLimiter.get_stats()`` re-enters its own non-reentrant lock. The RPM tests below therefore
only pass with omnilimit's classes in place.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import need

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omnigen_stub_provider import StubProvider

need("omnigen", load=False)  # checked without importing omnigen here

# The names patch_omnigen() rebinds, and where omnigen 0.1.18 binds them once the whole package is
# imported (``import omnigen`` imports every pipeline).
PATCHED_NAMES = (
    "RateLimiter",
    "ConcurrencyLimiter",
    "ProviderRateLimitManager",
    "get_default_rate_limit",
    "DEFAULT_RATE_LIMITS",
)
OMNIGEN_BINDINGS = {
    *(f"omnigen.utils.rate_limiter.{name}" for name in PATCHED_NAMES),
    "omnigen.utils.RateLimiter",
    "omnigen.pipelines.text_enhancement.runner.ProviderRateLimitManager",
    "omnigen.pipelines.text_enhancement.generator.ProviderRateLimitManager",
    "omnigen.pipelines.conversation_extension.runner.ProviderRateLimitManager",
    "omnigen.pipelines.conversation_extension.generator.RateLimiter",
}

CHILD_TIMEOUT_S = 60  # a run takes a few seconds; unpatched omnigen in RPM mode never finishes
ROLE = "text_enhancement"  # the role omnigen's text enhancement generator asks its limiter for


# ------------------------------------------------------------------------------------------------
# Helpers for the tests (pytest process)
# ------------------------------------------------------------------------------------------------


def _write_input(path: Path, count: int) -> list[str]:
    """A JSONL file of ``count`` passages with unique ids; returns the ids."""
    ids = [f"text-{i:03d}" for i in range(count)]
    with path.open("w", encoding="utf-8") as f:
        for i, text_id in enumerate(ids):
            text = (
                f"Passage {i}: a token bucket lets a short burst of requests through and then "
                "a steady rate, so that a shared API key is never throttled by its provider."
            )
            f.write(json.dumps({"id": text_id, "text": text}) + "\n")
    return ids


def _pipeline_config(
    workdir: Path, base_url: str, texts: int, workers: int, limiter_keys: dict[str, Any]
) -> dict[str, Any]:
    """OmniGen text enhancement config: the openai provider pointed at the stub, every file in
    ``workdir``, no checkpoint, no MongoDB."""
    return {
        "workspace_id": "omnilimit_e2e",
        "provider": {
            "name": "openai",
            "api_key": "sk-omnilimit-test",  # any non-empty key: the stub checks none
            "model": "gpt-4o-mini",
            "base_url": base_url,
            "temperature": 0.0,
            "max_tokens": 256,
            "timeout": 30,
            "max_retries": 1,  # the provider's own retries: one attempt, so requests == records
            "retry_delay": 0,
            **limiter_keys,
        },
        "generation": {"num_texts": texts, "parallel_workers": workers},
        "base_data": {"enabled": True, "file_path": str(workdir / "input.jsonl"), "text_column": "text"},
        "storage": {
            "type": "jsonl",
            "output_file": str(workdir / "output.jsonl"),
            "partial_file": str(workdir / "partial.jsonl"),
            "failed_file": str(workdir / "failed.jsonl"),
            "rejected_file": str(workdir / "rejected.jsonl"),
        },
        "checkpoint": {"enabled": False},
        "monitoring": {"enabled": False},
    }


def _run_child(workdir: Path, spec: dict[str, Any], what: str) -> dict[str, Any]:
    """Runs this file as a script on ``spec`` in a fresh interpreter; returns the report it wrote."""
    spec = {**spec, "workdir": str(workdir), "report": str(workdir / "report.json")}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(spec_path)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} did not finish within {CHILD_TIMEOUT_S} s (hung?)\n{_tail(e.stdout, e.stderr)}")
    if proc.returncode != 0 or not Path(spec["report"]).exists():
        pytest.fail(f"{what} failed (exit {proc.returncode})\n{_tail(proc.stdout, proc.stderr)}")
    report: dict[str, Any] = json.loads(Path(spec["report"]).read_text())
    report["wall_s"] = time.monotonic() - started
    return report


def _tail(stdout: Any, stderr: Any, chars: int = 4000) -> str:
    def text(s: Any) -> str:
        return s.decode(errors="replace") if isinstance(s, bytes) else (s or "")

    return f"--- stdout (tail) ---\n{text(stdout)[-chars:]}\n--- stderr (tail) ---\n{text(stderr)[-chars:]}"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _assert_all_enhanced(workdir: Path, ids: list[str]) -> None:
    """One completed output record per input record, and nothing failed, partial or rejected."""
    records = _read_jsonl(workdir / "output.jsonl")
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert all(r["status"] == "completed" and r["success"] for r in records)
    assert all(r["text"] and r["text"] != r["original_text"] for r in records)
    for name in ("failed.jsonl", "partial.jsonl", "rejected.jsonl"):
        assert _read_jsonl(workdir / name) == [], name


def _assert_from_omnilimit(report: dict[str, Any], limiter_class: str) -> None:
    """The run's manager and limiter were omnilimit's (omnigen built them through patched names)."""
    assert report["manager_is"] == "omnilimit.ProviderRateLimitManager", report["manager_type"]
    assert report["limiter_is"] == f"omnilimit.{limiter_class}", report["limiter_type"]
    assert "omnigen.pipelines.text_enhancement.runner.ProviderRateLimitManager" in report["patched"]


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_concurrency_mode_pipeline_never_exceeds_max_concurrent_calls(tmp_path):
    """OmniGen with ``max_concurrent_calls: 2`` and 6 parallel workers, on omnilimit's
    ConcurrencyLimiter: the pipeline finishes, writes one enhanced record per input record, and
    the provider never sees more than 2 requests at once (it does see 2: the workers contend)."""
    texts, workers, max_calls = 12, 6, 2
    ids = _write_input(tmp_path / "input.jsonl", texts)
    with StubProvider(latency_s=0.1) as provider:
        config = _pipeline_config(tmp_path, provider.base_url, texts, workers, {"max_concurrent_calls": max_calls})
        report = _run_child(tmp_path, {"mode": "pipeline", "config": config}, "the concurrency-mode pipeline")

    _assert_from_omnilimit(report, "ConcurrencyLimiter")
    _assert_all_enhanced(tmp_path, ids)
    assert provider.request_count == texts
    assert provider.max_in_flight == max_calls, [r.in_flight for r in provider.records]
    assert report["limiter"]["max_concurrent"] == max_calls
    stats = report["stats"]  # what omnigen's progress display read, after the run
    assert list(stats) == [report["limiter_name"]]
    assert stats[report["limiter_name"]] == {
        "max_concurrent": max_calls,
        "active_calls": 0,
        "total_requests": texts,
        "available_slots": max_calls,
    }


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("limiter_keys", "expected_rpm"),
    [
        pytest.param({"rate_limit_rpm": 600}, 600, id="rate_limit_rpm"),
        # No limiter key: omnigen's DEFAULT_RATE_LIMITS give gpt-4o-mini on openai 500 RPM.
        pytest.param({}, 500, id="no-limiter-keys"),
    ],
)
def test_rpm_mode_pipeline_finishes_and_respects_the_rate(tmp_path, limiter_keys, expected_rpm):
    """OmniGen in RPM mode, on omnilimit's RateLimiter: the pipeline finishes (unpatched omnigen
    0.1.18 deadlocks after the first record), writes every record, and the request arrivals keep to
    the limiter's rate: any k consecutive requests span at least (k - burst) / rate seconds, less a
    small allowance for the time between a limiter admitting a request and the stub receiving it."""
    texts, workers = 24, 6
    allowance_s = 0.15
    ids = _write_input(tmp_path / "input.jsonl", texts)
    with StubProvider(latency_s=0.02) as provider:
        config = _pipeline_config(tmp_path, provider.base_url, texts, workers, limiter_keys)
        report = _run_child(tmp_path, {"mode": "pipeline", "config": config}, "the RPM-mode pipeline")

    _assert_from_omnilimit(report, "RateLimiter")
    _assert_all_enhanced(tmp_path, ids)
    assert provider.request_count == texts

    rpm, burst = report["limiter"]["rpm"], report["limiter"]["burst_size"]
    assert rpm == expected_rpm
    assert 1 <= burst < texts, "a burst this large would let every request through at once: nothing tested"
    rate = rpm / 60.0
    times = provider.request_times
    for i in range(len(times)):
        for j in range(i, len(times)):
            admitted = j - i + 1
            allowed = burst + rate * (times[j] - times[i] + allowance_s)
            assert admitted <= allowed, (
                f"{admitted} requests arrived within {times[j] - times[i]:.3f} s; "
                f"burst {burst} + {rate:g}/s allows {allowed:.2f}"
            )
    # The limiter really throttled: the requests beyond the burst took their time.
    assert times[-1] - times[0] >= (texts - burst) / rate - allowance_s

    stats = report["stats"][report["limiter_name"]]
    assert stats["total_requests"] == texts  # every acquire() went through omnilimit
    assert stats["current_rpm"] == texts  # and every record_request() too


@pytest.mark.timeout(120)
def test_more_workers_than_the_rate_can_serve_in_a_timeout_send_no_extra_calls(tmp_path):
    """OmniGen's generators call ``acquire(timeout=120)``, ignore the result and call the provider.
    With more workers than ``2 x rpm`` (here 16 workers at 6 RPM: 12 turns fit in 120 s), the
    extra workers' acquires time out; if that happened at once they would call the provider in a
    tight loop. omnilimit answers False only after the 120 s, so over the first 5 s the provider
    sees the burst and the rate, nothing more (the reference's bound: the limit plus at most one
    call per worker per timeout)."""
    texts, workers, rpm, seconds = 48, 16, 6, 5.0
    _write_input(tmp_path / "input.jsonl", texts)
    with StubProvider(latency_s=0.02) as provider:
        config = _pipeline_config(tmp_path, provider.base_url, texts, workers, {"rate_limit_rpm": rpm})
        report = _run_child(
            tmp_path, {"mode": "pipeline_for", "seconds": seconds, "config": config}, "the RPM-mode pipeline"
        )
        times = list(provider.request_times)

    _assert_from_omnilimit(report, "RateLimiter")
    assert report["limiter"]["rpm"] == rpm and report["limiter"]["burst_size"] == 1
    allowed = 1 + rpm * seconds / 60  # the burst, then one request every 10 s
    print(f"[omnigen {workers} workers at {rpm} RPM] {len(times)} requests in {seconds} s (allowed {allowed})")
    assert 1 <= len(times) <= allowed
    stats = report["stats"][report["limiter_name"]]
    assert stats["total_requests"] == len(times) and stats["blocked_count"] == 0  # nobody gave up yet


@pytest.mark.timeout(120)
@pytest.mark.parametrize("order", ["imported_before", "not_imported"])
def test_patch_rebinds_omnigen_names_to_omnilimit(tmp_path, order):
    """After patch_omnigen(), every omnigen module that binds one of the patched names binds
    omnilimit's object, whether omnigen was imported before the patch (``from ... import`` copies
    must be rebound) or not at all (each case in a fresh interpreter). A
    ``ProviderRateLimitManager`` made through the runner module's name is omnilimit's and hands out
    omnilimit's limiters for omnigen-style provider configs."""
    report = _run_child(tmp_path, {"mode": "names", "order": order}, f"the name check ({order})")

    assert report["omnigen_imported_before_patch"] is (order == "imported_before")
    assert report["patched_again"] == []
    patched = set(report["patched"])
    if order == "imported_before":
        assert patched >= OMNIGEN_BINDINGS, sorted(OMNIGEN_BINDINGS - patched)
    else:
        assert {f"omnigen.utils.rate_limiter.{name}" for name in PATCHED_NAMES} <= patched, sorted(patched)
    assert set(report["bindings"]) >= OMNIGEN_BINDINGS, sorted(OMNIGEN_BINDINGS - set(report["bindings"]))
    not_omnilimit = {binding: what for binding, what in report["bindings"].items() if what != "omnilimit"}
    assert not_omnilimit == {}
    assert report["runner_manager_is"] == "omnilimit.ProviderRateLimitManager"
    assert report["concurrency_limiter_is"] == "omnilimit.ConcurrencyLimiter"
    assert report["rate_limiter_is"] == "omnilimit.RateLimiter"


# ------------------------------------------------------------------------------------------------
# The child interpreter: ``python test_omnigen_compat.py SPEC.json``
# ------------------------------------------------------------------------------------------------


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _omnilimit_class_of(obj: Any) -> str:
    """``omnilimit.X`` for an instance of omnilimit's X (a subclass counts), else its own class."""
    import omnilimit

    for name in ("ProviderRateLimitManager", "ConcurrencyLimiter", "RateLimiter"):
        if isinstance(obj, getattr(omnilimit, name)):
            return f"omnilimit.{name}"
    return _qualname(obj)


def _child_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    """Imports the pipeline, patches (the ``from ... import`` copies already exist then), runs it
    in the main thread as a user would, then reports what omnigen's objects were."""
    from omnigen.pipelines.text_enhancement.config import TextEnhancementConfig
    from omnigen.pipelines.text_enhancement.pipeline import TextEnhancementPipeline

    import omnilimit.compat

    patched = omnilimit.compat.patch_omnigen()
    pipeline = TextEnhancementPipeline(TextEnhancementConfig.from_dict(spec["config"]))
    started = time.monotonic()
    pipeline.run()
    elapsed = time.monotonic() - started

    return {**_report_on(pipeline, patched), "elapsed_s": elapsed}


def _report_on(pipeline: Any, patched: list[str]) -> dict[str, Any]:
    """What omnigen's manager and limiter were, and the stats its progress display reads."""
    runner = pipeline.runner
    provider_config = runner.generator.provider_config
    # The very call omnigen's generator makes before each request: it returns the same limiter.
    limiter = runner.rate_limiter.get_limiter(
        provider_name=provider_config.get("name", "default"), provider_config=provider_config, role=ROLE
    )
    return {
        "patched": list(patched),
        "manager_type": _qualname(runner.rate_limiter),
        "manager_is": _omnilimit_class_of(runner.rate_limiter),
        "limiter_type": _qualname(limiter),
        "limiter_is": _omnilimit_class_of(limiter),
        "limiter_name": getattr(limiter, "name", None) or getattr(limiter, "provider_name", None),
        "limiter": {attr: getattr(limiter, attr, None) for attr in ("max_concurrent", "rpm", "burst_size")},
        "stats": runner.rate_limiter.get_all_stats(),
    }


def _child_pipeline_for(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs the pipeline in a thread for ``spec["seconds"]`` only, then reports what omnigen's
    limiter saw (the child then exits without waiting for the workers)."""
    import threading

    from omnigen.pipelines.text_enhancement.config import TextEnhancementConfig
    from omnigen.pipelines.text_enhancement.pipeline import TextEnhancementPipeline

    import omnilimit.compat

    patched = omnilimit.compat.patch_omnigen()
    pipeline = TextEnhancementPipeline(TextEnhancementConfig.from_dict(spec["config"]))
    threading.Thread(target=pipeline.run, daemon=True).start()
    time.sleep(spec["seconds"])
    return _report_on(pipeline, patched)


def _child_names(spec: dict[str, Any]) -> dict[str, Any]:
    """Patches before or after importing omnigen, then reports what each omnigen binding is."""

    def omnigen_imported() -> bool:
        return any(m == "omnigen" or m.startswith("omnigen.") for m in sys.modules)

    if spec["order"] == "imported_before":
        importlib.import_module("omnigen")  # its __init__ imports every pipeline: runners, generators
    imported_before = omnigen_imported()

    import omnilimit
    import omnilimit.compat

    patched = omnilimit.compat.patch_omnigen()
    patched_again = omnilimit.compat.patch_omnigen()  # harmless: nothing left to replace

    from omnigen.pipelines.text_enhancement import runner  # after the patch, whatever the order

    bindings = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "omnigen" or module_name.startswith("omnigen.")):
            continue
        for name in PATCHED_NAMES:
            if name in vars(module):
                value = vars(module)[name]
                bindings[f"{module_name}.{name}"] = "omnilimit" if value is getattr(omnilimit, name) else repr(value)

    manager = runner.ProviderRateLimitManager()
    concurrency = manager.get_limiter(
        provider_name="openai",
        provider_config={"name": "openai", "api_key": "sk-x", "model": "gpt-4o-mini", "max_concurrent_calls": 3},
        role="user_followup",
    )
    rate = manager.get_limiter(
        provider_name="openai",
        provider_config={"name": "openai", "api_key": "sk-x", "model": "gpt-4o-mini", "rate_limit_rpm": 120},
        role="assistant_response",
    )
    return {
        "patched_again": patched_again,
        "omnigen_imported_before_patch": imported_before,
        "patched": list(patched),
        "bindings": bindings,
        "runner_manager_is": _omnilimit_class_of(manager),
        "concurrency_limiter_is": _omnilimit_class_of(concurrency),
        "rate_limiter_is": _omnilimit_class_of(rate),
    }


def _child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    os.chdir(spec["workdir"])  # omnigen writes relative paths (workspaces/...) under the cwd
    children = {"pipeline": _child_pipeline, "pipeline_for": _child_pipeline_for, "names": _child_names}
    report = children[spec["mode"]](spec)
    Path(spec["report"]).write_text(json.dumps(report, default=repr))


if __name__ == "__main__":
    # os._exit: do not wait for threads omnigen may leave behind (tqdm's monitor, executors).
    try:
        _child_main(sys.argv[1])
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
