"""The evaluation suite on a small shipped model, and the report from a stored results JSON."""

import json
import shutil
from pathlib import Path

import pytest

from ringlet.bench.suite import run_suite
from ringlet.comm.shaper import LinkProfile, profile
from ringlet.report import headline, write_report

ROOT = Path(__file__).resolve().parents[1]
STORED = Path(__file__).parent / "data" / "suite_small.json"


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """The shipped Fashion-MNIST net with hand-written eco / 8-64 / 6-64 configurations."""
    for ext in ("safetensors", "json"):
        shutil.copy(ROOT / "models" / f"fmnist-net-fmnist.{ext}", tmp_path)
    configs = {"eco": {"k": 22, "m": 0}, "8-64": {"k": 20, "m": 12}, "6-64": {"k": 18, "m": 12}}
    for name, setting in configs.items():
        (tmp_path / f"fmnist-net-fmnist.{name}.json").write_text(
            json.dumps({"version": 1, "default": setting}))
    monkeypatch.setenv("RINGLET_MODELS", str(tmp_path))
    return tmp_path


def test_suite_runs_every_combination_on_the_same_inputs(models_dir, tmp_path):
    out = tmp_path / "suite.json"
    result = run_suite(["fmnist-net"], links=("lan", "wan"), samples=4, batch=4, out=str(out), log=None)
    runs = result["runs"]
    assert len(runs) == 8 * 2  # the 5 gmw configurations and exact-, eco-, 8/64-fss
    assert {r["relu_protocol"] for r in runs if r["config"].endswith("-fss")} == {"fss"}
    fss = {(r["config"], r["link"]["name"]): r for r in runs}
    assert fss[("exact-fss", "lan")]["rounds"] < fss[("exact", "lan")]["rounds"]
    assert {r["samples"] for r in runs} == {4}
    by = {(r["config"], r["link"]["name"]): r for r in runs}
    relus = 37760
    # the CrypTen-equivalent baseline costs 1856 bits per ReLU, ours 308 (all first-layer ReLUs exact)
    assert by[("exact-crypten", "lan")]["bytes_per_image"] * 8 == 1856 * relus
    assert by[("exact", "lan")]["bytes_per_image"] * 8 == 308 * relus
    assert by[("exact-crypten", "wan")]["rounds"] == 3 * 9 and by[("exact", "wan")]["rounds"] == 3 * 8
    summary = result["summary"]["fmnist-net-fmnist"]
    assert result["comm_reduction_eco"] == summary["comm_reduction_eco"]  # one model: also top level
    assert summary["comm_reduction_exact"] == pytest.approx(1856 / 308)
    for key in ("comm_reduction_eco", "comm_reduction_8_64", "comm_reduction_6_64", "wan_speedup_eco",
                "wan_speedup_8_64", "wan_speedup_6_64", "comm_reduction_vs_exact_8_64",
                "wan_speedup_vs_exact_8_64"):
        assert summary[key] > 0
    assert summary["comm_reduction_8_64"] > summary["comm_reduction_eco"] > summary["comm_reduction_exact"]
    for r in runs:
        assert r["seconds_compute"] >= 0 and r["projected_seconds"] > 0
    assert json.loads(out.read_text())["runs"] == json.loads(json.dumps(runs))


def test_report_renders_from_a_stored_json(tmp_path):
    path = write_report(str(STORED), str(tmp_path / "rep"), [str(STORED.parent / "scale_small.json")])
    text = path.read_text()
    assert "exact-crypten" in text and "comm ÷" in text
    assert "Scaling" in text and "end at a batch of about" in text
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert any("speedup" in p for p in pngs) and any("breakdown" in p for p in pngs)
    assert all((tmp_path / "rep" / p).stat().st_size > 2000 for p in pngs)
    assert headline(json.loads(STORED.read_text())).count("\n|") >= 6


def test_link_profiles_and_projection():
    wan = profile("wan")
    assert wan.bandwidth_bps == 352e6 and wan.rtt_s == 0
    assert profile("wan-rtt").rtt_s == 0.05 and profile("wan-rtt", 100).rtt_s == 0.1
    assert LinkProfile("x", 8e6, 0.1).projected_seconds(1.0, 1_000_000, 10) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown link profile"):
        profile("5g")


def _fake_suite(configs, links, absent=()):
    """A suite result in run_suite's layout, without running anything."""
    bw = {"lan": 10000.0, "highbw": 3000.0, "wan": 352.0, "wan-rtt": 352.0}
    profiles = [{"name": lk, "bandwidth_mbps": bw[lk], "rtt_ms": 50.0 if lk == "wan-rtt" else 0.0}
                for lk in links]
    runs = []
    for i, cfg in enumerate(configs):
        for link in profiles:
            lk = link["name"]
            if (cfg, lk) in absent:
                continue
            nbytes, comm = 40e6 / (1 + i), 0.1 * bw["lan"] / bw[lk] / (1 + i)
            runs.append({
                "model": "toy-net-fmnist", "checkpoint": "toy-net-fmnist", "config": cfg, "link": link,
                "accuracy": 0.9, "plaintext_accuracy": 0.9, "argmax_agreement": 1.0, "samples": 4,
                "bytes_sent_per_party": nbytes, "bytes_per_image": nbytes / 4, "rounds": 27 - i,
                "seconds_online": 0.2 + comm, "images_per_second": 4 / (0.2 + comm),
                "seconds_compute": 0.2, "seconds_communication": comm,
                "breakdown_bytes": {"circuit": 0.7 * nbytes, "mult": 0.2 * nbytes, "b2a": 0.1 * nbytes,
                                    "other": 0},
                "projected_seconds": 0.2 + comm, "kept_bits_fraction": 1.0, "relu_config": None,
                "seconds_online_real_link": None})
    return {"command": "fake", "samples": 4, "batch": 4, "parties": 2, "links": profiles, "runs": runs,
            "summary": {}, "searches": {}}


CONFIGS_MANY = ("exact-crypten", "exact", "eco", "8/64", "6/64", "eco-ring", "exact-fss", "eco-fss")


@pytest.mark.parametrize("links", [("lan",), ("lan", "highbw", "wan", "wan-rtt")])
def test_report_figures_have_one_panel_per_link(tmp_path, links):
    from ringlet.report import _breakdown_plot, _comm_rounds_plot, _speedup_plot

    absent = {("eco-fss", "wan")} if len(links) > 1 else set()
    result = _fake_suite(CONFIGS_MANY, links, absent)
    src = tmp_path / "suite.json"
    src.write_text(json.dumps(result))
    text = write_report(str(src), str(tmp_path / "rep")).read_text()
    for png in ("speedup", "comm-rounds", "breakdown"):
        name = f"toy-net-fmnist-{png}.png"
        assert f"]({name})" in text
        assert (tmp_path / "rep" / name).stat().st_size > 2000
    assert text.count("| eco-fss |") == 1 + len(links) - len(absent)  # headline, then one per run
    speedup = _speedup_plot(result, "toy-net-fmnist", tmp_path / "s.png")
    assert [ax.get_title().split(":")[0] for ax in speedup.axes] == list(links)
    assert all(ax.get_shared_y_axes().joined(speedup.axes[0], ax) for ax in speedup.axes[1:])
    breakdown = _breakdown_plot(result, "toy-net-fmnist", tmp_path / "b.png")
    assert len(breakdown.axes) == len(links) + 1  # one per link, then bytes by protocol part
    assert [ax.get_title().split(":")[0] for ax in breakdown.axes[:-1]] == list(links)
    for fig in (speedup, breakdown, _comm_rounds_plot(result, "toy-net-fmnist", tmp_path / "c.png")):
        for ax in fig.axes:  # every configuration on every panel's axis, in the runs' order
            assert [t.get_text() for t in ax.get_xticklabels()] == list(CONFIGS_MANY)
    more = _fake_suite([f"config-{i}" for i in range(20)], links)
    wider = _breakdown_plot(more, "toy-net-fmnist", tmp_path / "w.png")
    assert wider.get_figwidth() > breakdown.get_figwidth()  # the figure widens with the configurations
