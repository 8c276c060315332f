"""The published numbers: every value sourced, methods registered, docs/published.md rendered from the data."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from scrapbench.core.registry import get_spec
from scrapbench.report.published import METRICS, load_published, published_for, published_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "published.md"


def test_every_published_value_names_its_sources():
    document = json.loads(resources.files("scrapbench.report").joinpath("published.json").read_text())
    rows = load_published()
    assert len(rows) == len(document["results"]) == 10
    for row in rows:
        get_spec(row.method)  # a registered scrapbench method
        assert row.dataset in ("mvtec", "visa") and row.paper in document["papers"]
        assert set(row.values) == set(METRICS)
        for key, value in row.values.items():
            if value is None:
                assert key not in row.sources
                continue
            assert 0.0 < value <= 100.0
            assert all(source.strip() in document["sources"] for source in row.sources[key].split(";"))


def test_lookup_by_method_dataset_and_shots():
    row = published_for("anomalyclip", "mvtec")
    assert row is not None and row.table == "Table 1" and row.train_on == "visa"
    assert row.values == {"pixel_auroc": 91.1, "aupro": 81.4, "image_auroc": 91.5, "image_ap": 96.2}
    assert published_for("winclip_plus", "visa", shots=4).values["aupro"] == 87.6
    assert published_for("winclip_plus", "visa", shots=10) is None
    assert published_for("ours", "mvtec") is None


def test_docs_table_is_the_rendered_data():
    text = DOCS.read_text()
    table = text.split("<!-- published-table:start -->\n", 1)[1].split("<!-- published-table:end -->", 1)[0]
    assert table == published_markdown()
