"""engine.contract.data.preview: stdlib-only, same validation as the loader, first problems with FILE:LINE."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.context import EngineError
from engine.training_data.loading import load_records
from engine.contract.data.preview import MAX_ERRORS, preview_file
from engine.contract.spec import DataSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "dolly_en_sample.jsonl"
ROOT = Path(__file__).resolve().parents[3]


def test_preview_is_stdlib_only():
    code = ("import sys, engine.contract.data.preview as p\n"
            "p.preview_file(sys.argv[1], limit=3)\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pyarrow', 'numpy', 'rouge_score') "
            "if m in sys.modules]\nprint(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code, str(FIXTURE)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_preview_rows_match_the_loader():
    preview = preview_file(FIXTURE, limit=5, preset="dolly_en")
    assert preview.ok and preview.total_rows_read == 5
    assert preview.columns == ["instruction", "context", "response", "category"]
    assert preview.rows == load_records(DataSpec(preset="dolly_en", path=str(FIXTURE), max_samples=5))


def test_preview_csv_with_mapping(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("pregunta,respuesta\n¿Qué es el sol?,Una estrella.\n¿Y la luna?,Un satélite.\n", encoding="utf-8")
    preview = preview_file(path, columns={"instruction": "pregunta", "response": "respuesta"})
    assert preview.columns == ["pregunta", "respuesta"]
    assert [r["response"] for r in preview.rows] == ["Una estrella.", "Un satélite."]
    assert preview.errors == []


def test_preview_collects_the_first_errors_and_stops(tmp_path):
    lines = [json.dumps({"instruction": "ok", "response": "fine"})]
    lines += ['{"instruction": "broken"'] + [json.dumps({"instruction": f"q{i}", "response": ""}) for i in range(20)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    preview = preview_file(path)
    assert len(preview.rows) == 1
    assert len(preview.errors) == MAX_ERRORS
    assert preview.errors[0].startswith(f"{path}:2: not valid JSON")
    assert preview.errors[1] == f"{path}:3: response is empty; fill it in or remove this row."
    assert preview.total_rows_read == 1 + MAX_ERRORS
    # the loader stops at the very same first problem
    with pytest.raises(EngineError) as info:
        load_records(DataSpec(preset="local", path=str(path)))
    assert str(info.value) == preview.errors[0]


def test_preview_file_level_problems(tmp_path):
    assert preview_file(tmp_path / "nope.jsonl").errors == [f"{tmp_path / 'nope.jsonl'}: no such file; check "
                                                            f"data.path."]
    path = tmp_path / "obj.json"
    path.write_text('{"instruction": "a", "response": "b"}\n{"instruction": "c", "response": "d"}\n', encoding="utf-8")
    assert len(preview_file(path).rows) == 2  # JSON lines saved as .json
    path = tmp_path / "scalar.json"
    path.write_text('"just text"', encoding="utf-8")
    assert "must hold a list of objects" in preview_file(path).errors[0]
    assert "not a canonical field" in preview_file(FIXTURE, columns={"prompt": "x"}).errors[0]


def test_preview_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "response": "b"},
                                         {"instruction": "c", "response": None}]),
                   tmp_path / "d.parquet")
    preview = preview_file(tmp_path / "d.parquet")
    assert len(preview.rows) == 1
    assert preview.errors == [f"{tmp_path / 'd.parquet'}:row 2: response is empty; fill it in or remove this row."]
