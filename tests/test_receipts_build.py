"""Receipt writing (AC14): `build_receipt` from a `RunMeasurement`, the atomic writer, the
machine fingerprint read from the machine, and the schemas found from a built package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bitnet.receipts import machine
from bitnet.receipts.build import RunMeasurement, build_receipt, write_receipt_atomic
from bitnet.receipts.verify import verify_receipt

ROOT = Path(__file__).resolve().parents[1]


def _measurement_from(receipt: dict, model: Path, **over) -> RunMeasurement:
    """The RunMeasurement a benchmark run would hand over, restated from its own receipt."""
    g, t = receipt["generation"], receipt["timings"]
    fields = dict(
        model_path=model, architecture=receipt["model"]["architecture"], formats=receipt["model"]["formats"],
        weight_bytes_per_token=receipt["model"]["weight_bytes_per_token"], backend=receipt["backend"],
        profile=receipt["profile"], prompt_text="x", prompt_ids=list(range(receipt["prompt"]["tokens"])),
        generated_ids=g["token_ids"], max_tokens=g["max_tokens"], seed=g["seed"], sampler=g["sampler"],
        deterministic=g["deterministic"], load_s=t["load_s"], prefill_s=t["prefill_s"],
        decode_step_s=t["decode_step_s"], total_s=t["total_s"], kernels=receipt["kernels"],
        decode_kernels=receipt["decode_kernels"], peak_rss_bytes=receipt["peak_rss_bytes"])
    fields.update(over)
    return RunMeasurement(**fields)


@pytest.mark.ac14
def test_build_receipt_derives_every_figure(measured_receipt):
    model, _, receipt = measured_receipt
    tz = timezone(timedelta(hours=2))
    m = _measurement_from(receipt, model, created_at=datetime(2026, 11, 22, 14, 0, 0, tzinfo=tz))
    r = build_receipt(m)
    assert verify_receipt(r, model=model).passed
    assert r["created_at"] == "2026-11-22T12:00:00.000000Z"  # converted to UTC
    t = r["timings"]
    assert t["decode_s"] == pytest.approx(sum(t["decode_step_s"]))
    assert r["throughput"]["decode_tok_s"] == pytest.approx(len(t["decode_step_s"]) / t["decode_s"])
    assert r["prompt"]["sha256"] == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # sha256("x")
    assert r["compute_path"] == "real" and r["schema_version"] == "1.3.0"


@pytest.mark.ac14
def test_write_is_atomic(tmp_path, measured_receipt):
    target = tmp_path / "r.json"
    receipt = measured_receipt[2]
    write_receipt_atomic(target, receipt)
    assert json.loads(target.read_text()) == receipt
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_receipt_atomic(target, {**receipt, "bad": object()})
    assert target.read_bytes() == before  # the previous receipt is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_fingerprint_is_read_from_this_machine(monkeypatch):
    def no_subprocess(*a, **k):
        raise AssertionError("the CPU fingerprint must not run a process (nvidia-smi only for a GPU run)")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    fp = machine.fingerprint()
    assert "gpu" not in fp
    assert fp["cores"] == os.cpu_count()
    import numpy as np

    assert fp["numpy"] == np.__version__
    if Path("/proc/meminfo").exists():
        kib = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:"))
        assert fp["memory_bytes"] == kib * 1024
    if Path("/proc/cpuinfo").exists():
        text = Path("/proc/cpuinfo").read_text()
        if "model name" in text:
            assert fp["cpu"] in text
        if "flags" in text:
            assert set(fp["cpu_flags"]) <= set(text.split())
    gpu = {"name": "given", "compute_capability": "9.0", "driver": None, "memory_bytes": 1}
    assert machine.fingerprint(gpu)["gpu"] is gpu  # only what the caller measured


def test_schemas_and_policies_ship_in_the_built_package(tmp_path):
    """setup.py's build_py copies schemas/ and policies/ into bitnet/_resources (what a wheel
    holds); a package imported from that build output finds them there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("bitnet", "schemas", "policies"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    out = tmp_path / "lib"
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)], cwd=src,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("schemas/inference-receipt.schema.json", "schemas/gpu-allowlist.schema.json",
                 "policies/receipt-policy.yml", "policies/gpu-allowlist.yml"):
        packaged = out / "bitnet" / "_resources" / name
        assert packaged.read_bytes() == (ROOT / name).read_bytes(), name
    probe = ("import json, bitnet.receipts.policy as p; "
             "print(json.dumps([str(p.schema_dir()), str(p.policy_dir()), p.is_packaged_copy(p.default_allowlist_path()), "
             "p.load_schema('inference-receipt.schema.json')['title'], p.receipt_policy()['schema_major']]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITNET_")}
    env["PYTHONPATH"] = str(out)
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    schemas, policies, packaged, title, major = json.loads(r.stdout)
    assert Path(schemas) == out / "bitnet" / "_resources" / "schemas"
    assert Path(policies) == out / "bitnet" / "_resources" / "policies"
    assert packaged is True and title == "bitnet-harness inference receipt" and major == 1


def test_receipt_written_now_is_utc(measured_receipt):
    created = datetime.fromisoformat(measured_receipt[2]["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(hours=1)
