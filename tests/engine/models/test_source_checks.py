"""Every model file type damaged (issue 19, item 7): the pre-run check reads the tokenizer and the tensor shapes
(safetensors headers, a .bin only through weights_only) and names the file that is wrong, in a sentence that is
never cut mid-word; a pickle that would run code is refused without running; the CLI refuses the run with exit 2
and no traceback before a run folder exists."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.contract.spec import ModelSpec
from engine.core.context import EngineError
from engine.models.loading import check_source, load_model
from engine.models.source_checks import brief

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def model(pristine, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(pristine, folder)
    return folder


def _refusal(folder: Path) -> str:
    with pytest.raises(EngineError) as caught:
        check_source(str(folder))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "above report" not in message
    return message


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def _rewrite_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_sound_folder_passes(model):
    check_source(str(model))


@pytest.mark.parametrize("content, expected", [
    ('{"version": "1.0", "model": 5}', "tokenizer.json does not describe a tokenizer"),
    ("this is not json", "tokenizer.json is not valid JSON"),
    ("[1, 2, 3]", "tokenizer.json holds a JSON list, not an object"),
])
def test_a_damaged_tokenizer_json_is_named(model, content, expected):
    (model / "tokenizer.json").write_text(content)
    assert expected in _refusal(model)


@pytest.mark.parametrize("content, expected", [
    ("{'single': quotes}", "tokenizer_config.json is not valid JSON"),
    ('{"eos_token": 5}', "does not load"),
])
def test_a_damaged_tokenizer_config_is_named(model, content, expected):
    (model / "tokenizer_config.json").write_text(content)
    message = _refusal(model)
    assert expected in message and "tokenizer_config.json" in message


def test_a_config_whose_vocabulary_disagrees_with_the_weights_names_the_tensor(model):
    _edit_config(model, vocab_size=999)
    message = _refusal(model)
    assert "model.safetensors stores model.embed_tokens.weight as [393, 64] but config.json describes [999, 64]" \
        in message and "vocab_size 999" in message


def test_a_tokenizer_larger_than_the_embedding_is_refused(model):
    _edit_config(model, vocab_size=100)
    assert "has 393 tokens but config.json's vocab_size is 100" in _refusal(model)


@pytest.mark.parametrize("layers, stored", [(4, 2), (1, 2)])
def test_a_layer_count_that_disagrees_with_the_weights_is_named(model, layers, stored):
    _edit_config(model, num_hidden_layers=layers, layer_types=None)
    assert f"hold {stored} layers but config.json says num_hidden_layers: {layers}" in _refusal(model)


def test_a_stored_tensor_of_the_wrong_shape_is_named(model):
    def shrink(tensors):
        name = "model.layers.1.mlp.down_proj.weight"
        tensors[name] = tensors[name][:, :100].contiguous()

    _rewrite_weights(model, shrink)
    assert "stores model.layers.1.mlp.down_proj.weight as [64, 100] but config.json describes [64, 128]" \
        in _refusal(model)


def test_a_missing_tensor_is_refused(model):
    _rewrite_weights(model, lambda tensors: tensors.pop("model.norm.weight"))
    assert "lack 1 tensor(s) that config.json describes (e.g. model.norm.weight)" in _refusal(model)


@pytest.mark.parametrize("damage", ["truncated", "huge header length", "header not JSON"])
def test_a_damaged_safetensors_header_is_named(model, damage):
    path = model / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:100])
    elif damage == "huge header length":
        path.write_bytes((10 ** 12).to_bytes(8, "little") + data[8:])
    else:
        path.write_bytes(data[:8] + b"\xff" * 40 + data[48:])
    message = _refusal(model)
    assert "model.safetensors" in message and "damaged or cut short" in message


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(model, tmp_path):
    sentinel = tmp_path / "ran"
    (model / "model.safetensors").unlink()
    with open(model / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Payload(sentinel)}, f, protocol=2)
    message = _refusal(model)
    assert "pytorch_model.bin" in message and "refused and nothing in it ran" in message
    assert "posix.system" in message  # the global it asked for, quoted from torch's refusal
    with pytest.raises(EngineError):  # the load itself, past the check, reads it only with weights_only too
        load_model(ModelSpec(source=str(model)), "cpu")
    assert not sentinel.exists()


def test_a_plain_bin_checkpoint_is_read_safely_and_its_shapes_compared(model):
    import torch
    from safetensors.torch import load_file

    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save(tensors, model / "pytorch_model.bin")
    check_source(str(model))  # a real checkpoint in the old format is fine
    _edit_config(model, intermediate_size=96)
    message = _refusal(model)
    assert "pytorch_model.bin stores model.layers.0.mlp." in message and "intermediate_size 96" in message


def test_quoted_causes_are_cut_at_a_word():
    text = "first line\n  " + " ".join(f"word{i}" for i in range(100))
    cut = brief(text, 60)
    assert cut.endswith("…") and len(cut) <= 61 and "\n" not in cut
    assert cut[:-1].split(" ")[-1].startswith("word") and (cut[:-1] + " ") in text.replace("\n  ", " ") + " "
    assert brief(ValueError()) == "ValueError" and brief("short") == "short"


def test_the_cli_refuses_a_damaged_model_before_the_run_starts(model, tmp_path):
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": 5}')
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: damaged\nstudent: {{source: {json.dumps(str(model))}}}\n"
                    "stages: [{kind: sft, name: s, model: student}]\n")
    env = dict(os.environ, COMPRESSION_STUDIO_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "engine", "run", str(spec)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["error"]
    assert "tokenizer.json does not describe a tokenizer" in events[0]["data"]["message"]
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "home").glob("runs/*"))  # refused before a run folder exists
