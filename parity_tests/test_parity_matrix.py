"""The parity matrix: every family x 8 task rows x {PyTorch, TensorFlow, Flax} natively and exported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxport.dev import parity
from onnxport.families import FAMILIES

ROWS = [(family, task, past) for family in FAMILIES for task, past in parity.TASKS]
RESULT = parity.Result()
ALLOWED_SKIPS = ("no rotary embedding in this family", "is not installed")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    yield str(tmp_path_factory.mktemp("parity"))
    if RESULT.cells:
        print("\n" + parity.table(RESULT))


@pytest.mark.parametrize("family,task,with_past", ROWS,
                         ids=[f"{f}-{t}{'-past' if p else ''}" for f, t, p in ROWS])
def test_row(workdir, family, task, with_past):
    cells = parity.run_row(family, task, with_past, workdir)
    RESULT.cells += cells
    assert len(cells) == len(parity.COMPARISONS)
    failed = [c.describe() for c in cells if c.status == "failed"]
    assert not failed, "\n".join(failed)
    for cell in cells:
        if cell.status == "skipped":  # never a silent pass: only a missing framework or a non-rotary family
            assert any(reason in cell.reason for reason in ALLOWED_SKIPS), cell.describe()
        else:
            assert cell.error is not None and cell.error <= cell.tolerance
    if family == "roformer":
        assert any(c.comparison == "function~fused" and c.status == "passed" for c in cells)


def test_mismatch_names_output_position_and_values():
    a = {"logits": np.zeros((2, 3, 4), np.float32)}
    b = {"logits": np.zeros((2, 3, 4), np.float32)}
    b["logits"][1, 2, 0] = 0.5
    error, worst = parity.compare(a, b, ["logits"], "padded")
    assert error == 0.5 and worst == {"output": "logits", "case": "padded", "index": [1, 2, 0], "a": 0.0, "b": 0.5,
                                      "abs_error": 0.5, "scale": 1.0}
    cell = parity.Cell("roformer", "fill-mask", "pt~tf", "native-native", "failed", error, 1e-5, worst)
    assert "logits[1, 2, 0] (padded): 0 vs 0.5" in cell.describe()
    # Relative to the output's scale: the same 0.5 on logits of magnitude 20 is an error of 0.025 ...
    a["logits"][0, 0, 1] = -20.0
    b["logits"][0, 0, 1] = -20.0
    assert parity.compare(a, b, ["logits"], "scaled")[0] == pytest.approx(0.5 / 20)
    # ... and outputs named in skip (random weights) are never compared
    assert parity.compare(a, b, ["logits"], "x", skip={"logits"}) == (0.0, None)
    b["logits"][0, 0, 0] = np.nan  # NaN counts as an infinite error, never as a pass
    assert parity.compare(a, b, ["logits"], "x")[0] == np.inf


def test_reports_json_html_and_skips():
    result = parity.Result(cells=[
        parity.Cell("xlm-roberta", "fill-mask", "pt~tf", "native-native", "passed", 2e-6, 1e-5),
        parity.Cell("xlm-roberta", "fill-mask", "pt~flax", "native-native", "skipped", reason="flax is not installed"),
        parity.Cell("roformer", "fill-mask", "pt~onnx[pt]", "native-onnx", "failed", 3e-3, 1e-4,
                    {"output": "logits", "case": "padded", "index": [0, 1, 2], "a": 1.0, "b": 1.003}),
    ])
    assert result.counts() == {"passed": 1, "skipped": 1, "failed": 1}
    assert result.summary().startswith("1 passed, 1 failed, 1 skipped")
    data = json.loads(result.to_json())
    assert data["worst_by_kind"] == {"native-native": 2e-6, "native-onnx": 3e-3}
    page = parity.html_report(result)
    assert "#d73027" in page and "#e0e0e0" in page and "skipped: flax is not installed" in page
    assert "&#10003; 2.0e-06" in page and "logits[0, 1, 2] (padded): 1 vs 1.003" in page  # text, not tooltips
    text = parity.table(result)
    assert "3.0e-03 FAIL" in text and "skipped pt~flax: flax is not installed" in text


def test_given_checkpoint_fills_its_own_head_and_feature_extraction(tmp_path):
    checkpoint = parity.build_checkpoint(str(tmp_path / "ckpt"), "roformer", "ForTokenClassification", "tiny", seed=3)
    assert parity.checkpoint_rows(checkpoint) == [("roformer", "feature-extraction", False),
                                                  ("roformer", "token-classification", False)]
    result = parity.run_matrix(frameworks=["pt"], tasks=["token-classification"], checkpoints=[checkpoint],
                               workdir=str(tmp_path / "work"))
    cells = {c.comparison: c for c in result.cells}
    assert cells["pt~onnx[pt]"].status == "passed" and cells["pt~onnx[pt]"].error <= 1e-4
    assert result.checkpoints == [checkpoint] and checkpoint in parity.table(result).splitlines()[0]
    assert cells["pt~tf"].status == "skipped" and "--frameworks" in cells["pt~tf"].reason
    with pytest.raises(FileNotFoundError, match="no config.json"):
        parity.checkpoint_rows(str(tmp_path))


def test_html_report_in_a_real_browser(tmp_path):
    """Debian's Chromium renders the page: the failing cell's output, difference and tolerance, the passing
    cell's mark and the skip reason are visible text in the cells (not tooltips), with the legend and title."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    result = parity.Result(checkpoints=["/data/my-roberta"], date="2026-12-03 12:00 UTC", cells=[
        parity.Cell("roberta", "fill-mask", "pt~tf", "native-native", "passed", 2e-6, 1e-5),
        parity.Cell("roberta", "fill-mask", "pt~flax", "native-native", "skipped", reason="flax is not installed"),
        parity.Cell("roberta", "fill-mask", "pt~onnx[pt]", "native-onnx", "failed", 3e-3, 1e-4,
                    {"output": "logits", "case": "padded", "index": [0, 1, 2], "a": 1.0, "b": 1.003,
                     "abs_error": 3e-3, "scale": 1.0}),
    ])
    page = tmp_path / "parity.html"
    page.write_text(parity.html_report(result), encoding="utf-8")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        try:
            view = browser.new_page(viewport={"width": 1800, "height": 600})
            view.goto(page.as_uri())
            assert "/data/my-roberta" in view.title() and "2026-12-03" in view.title()
            failed = view.locator("td.failed")
            assert failed.is_visible()
            text = failed.inner_text()
            assert "FAILED" in text and "3.00e-03 > 1e-04" in text and "logits[0, 1, 2]" in text
            assert "✓ 2.0e-06" in view.locator("td.passed").inner_text()
            assert "flax is not installed" in view.locator("td.skipped").inner_text()
            assert view.locator(".key").count() == 5 and view.locator(".key").first.is_visible()
            view.screenshot(path=str(tmp_path / "parity.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "parity.png").stat().st_size > 10_000
