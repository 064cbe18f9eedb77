"""The README's "Reading the output" recipes, run verbatim on a fresh demo output.

The code blocks are taken from README.md (so the README and the tests cannot drift) and run
in a subprocess from a directory holding ``clipcrawl-demo/``, exactly as a reader would run
them after ``clipcrawl demo``. A probe appended after each block prints what the recipe
computed; every number is checked against the parquet read here with pyarrow alone.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
SECTION = "## Reading the output"
DEMO = "clipcrawl-demo"

# What each recipe's probe prints (as JSON after "RESULT "), by the recipe's ### title.
PROBES = {
    "Training: WebDataset and a PyTorch DataLoader": """
seen = []
for images, captions, similarities in loader:
    seen += [[c, float(s), list(images.shape[1:])] for c, s in zip(captions, similarities)]
print("RESULT " + json.dumps(seen))
""",
    "Hugging Face `datasets`": """
print("RESULT " + json.dumps({
    "kept_keys": sorted(kept["key"]),
    "sample_keys": sorted(samples["__key__"]),
    "captions": dict(zip(samples["__key__"], samples["txt"])),
    "sizes": {row["__key__"]: list(row["jpg"].size) for row in samples},
    "similarities": {row["__key__"]: row["json"]["similarity"] for row in samples},
}))
""",
    "SQL with DuckDB": """
print("RESULT " + json.dumps({"by_status": by_status, "kept_by_language": kept_by_language,
                             "quantiles": similarity_quantiles}))
""",
    "pyarrow": """
print("RESULT " + json.dumps({"by_status": by_status.to_pylist(), "kept": kept.num_rows,
                             "kept_keys": sorted(kept["key"].to_pylist()), "quantiles": similarity_quantiles}))
""",
    "LAION's column names": """
print("RESULT " + json.dumps({"columns": laion.column_names, "rows": laion.to_pylist()}))
""",
}


def readme_recipes() -> dict[str, list[tuple[str, str]]]:
    """``title -> [(language, code), ...]`` for each ``###`` recipe of the section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    recipes = {}
    for part in section.split("\n### ")[1:]:
        title, body = part.split("\n", 1)
        recipes[title.strip()] = re.findall(r"```(python|bash)\n(.*?)```", body, flags=re.S)
    return recipes


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A directory with ``clipcrawl-demo/`` made by the demo command, as a reader would have it."""
    root = tmp_path_factory.mktemp("recipes")
    assert cli.main(["demo", "--root", str(root / DEMO)]) == 0
    return root


@pytest.fixture(scope="module")
def rows(workdir: pathlib.Path) -> list[dict[str, Any]]:
    """Every parquet row of the demo output: the ground truth the recipes are checked against."""
    paths = sorted(glob.glob(str(workdir / DEMO / "dataset" / "[0-9]*.parquet")))
    assert len(paths) == 3
    return [row for path in paths for row in pq.read_table(path).to_pylist()]


def run_recipe(title: str, workdir: pathlib.Path) -> Any:
    """Run the recipe's blocks in order (bash as is, python with the probe appended); the probe's result."""
    blocks = readme_recipes()[title]
    assert blocks and blocks[-1][0] == "python", f"{title}: the last block must be python"
    env = {k: v for k, v in os.environ.items() if k != "CLIPCRAWL_PROGRESS_DIR"}
    env.update(HF_HOME=str(workdir / "hf-home"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    result = None
    for language, code in blocks:
        assert f"{DEMO}/" in code, f"{title}: recipes read the demo's output"
        if language == "bash":
            command = ["bash", "-euo", "pipefail", "-c", code]
        else:
            command = [sys.executable, "-c", code + "\nimport json\n" + PROBES[title]]
        result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{title} ({language}) failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0].removeprefix("RESULT "))


def kept_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in rows if row["status"] == "success"}


def test_the_readme_section_holds_exactly_the_tested_recipes() -> None:
    recipes = readme_recipes()
    assert set(recipes) == set(PROBES)
    assert all(code.strip() for blocks in recipes.values() for _, code in blocks)


def test_the_demo_output_is_what_the_readme_comments_say(rows: list[dict[str, Any]]) -> None:
    statuses = collections.Counter(row["status"] for row in rows)
    assert len(rows) == 32 and statuses["success"] == 16 and statuses["below_threshold"] == 8


def test_webdataset_loader_yields_every_kept_image_with_its_caption(workdir: pathlib.Path, rows: list) -> None:
    seen = run_recipe("Training: WebDataset and a PyTorch DataLoader", workdir)
    kept = kept_rows(rows).values()
    assert sorted((c, round(s, 6)) for c, s, _ in seen) == sorted((r["caption"], round(r["similarity"], 6)) for r in kept)
    assert {tuple(shape) for _, _, shape in seen} == {(3, 224, 224)}


def test_hugging_face_datasets_load_the_tars_and_the_parquet(workdir: pathlib.Path, rows: list) -> None:
    found = run_recipe("Hugging Face `datasets`", workdir)
    kept = kept_rows(rows)
    assert found["kept_keys"] == sorted(kept) == found["sample_keys"]
    assert found["captions"] == {key: row["caption"] for key, row in kept.items()}
    assert found["sizes"] == {key: [row["width"], row["height"]] for key, row in kept.items()}
    assert found["similarities"] == pytest.approx({key: row["similarity"] for key, row in kept.items()})


def test_duckdb_counts_rates_and_quantiles_match_the_parquet(workdir: pathlib.Path, rows: list) -> None:
    found = run_recipe("SQL with DuckDB", workdir)
    assert dict(map(tuple, found["by_status"])) == collections.Counter(row["status"] for row in rows)
    by_language: dict[Any, list[int]] = collections.defaultdict(lambda: [0, 0])
    for row in rows:
        by_language[row["language"]][0] += 1
        by_language[row["language"]][1] += row["status"] == "success"
    found_by_language = {language: (n, rate) for language, n, rate in found["kept_by_language"]}
    assert found_by_language.keys() == by_language.keys()
    for language, (n, kept) in by_language.items():
        assert found_by_language[language] == (n, pytest.approx(kept / n)), language
    similarities = [row["similarity"] for row in rows if row["similarity"] is not None]
    assert found["quantiles"] == pytest.approx(list(np.quantile(similarities, [0.1, 0.5, 0.9])))


def test_pyarrow_counts_and_quantiles_match_the_parquet(workdir: pathlib.Path, rows: list) -> None:
    found = run_recipe("pyarrow", workdir)
    counts = collections.Counter(row["status"] for row in rows)
    assert {item["status"]: item["key_count"] for item in found["by_status"]} == counts
    assert [item["key_count"] for item in found["by_status"]] == sorted(counts.values(), reverse=True)
    assert found["kept"] == counts["success"] and found["kept_keys"] == sorted(kept_rows(rows))
    similarities = [row["similarity"] for row in rows if row["similarity"] is not None]
    assert found["quantiles"] == pytest.approx(list(np.quantile(similarities, [0.1, 0.5, 0.9])))


def test_laion_export_has_laions_columns_and_the_kept_rows(workdir: pathlib.Path, rows: list) -> None:
    found = run_recipe("LAION's column names", workdir)
    assert found["columns"] == ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "LANGUAGE", "key", "status"]
    kept = kept_rows(rows)
    assert [row["key"] for row in found["rows"]] == sorted(kept)
    for row in found["rows"]:
        source = kept[row["key"]]
        assert row == {
            "URL": source["url"], "TEXT": source["caption"], "WIDTH": source["original_width"],
            "HEIGHT": source["original_height"], "similarity": pytest.approx(source["similarity"]),
            "LANGUAGE": source["language"], "key": source["key"], "status": "success",
        }
