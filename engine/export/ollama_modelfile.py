"""The Ollama ``Modelfile`` written beside an exported GGUF: FROM the file, the chat template in Ollama's Go
syntax (ChatML for Qwen2), the template's default system prompt, and the end-of-turn stop tokens."""
from __future__ import annotations

import re
from typing import Any


def chatml_stop_tokens(config: dict, tokens: list[str]) -> list[str]:
    """End-of-turn tokens to stop on: the model's eos ids (generation_config.json can list several)."""
    ids = config.get("eos_token_id")
    ids = ids if isinstance(ids, list) else [ids]
    return [tokens[i] for i in ids if isinstance(i, int) and 0 <= i < len(tokens)]


def default_system_prompt(tokenizer: Any) -> str | None:
    """The system prompt the chat template adds when a conversation has none (Qwen's "You are …")."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "?"}], add_generation_prompt=True,
                                             tokenize=False)
    except Exception:  # noqa: BLE001 - a template that needs more than one user turn has no default to find
        return None
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", text, re.DOTALL)
    return found.group(1) if found else None


def modelfile_text(gguf_name: str, template: str | None, stops: list[str], default_system: str | None) -> str:
    """An Ollama Modelfile. For a ChatML template (Qwen2) the TEMPLATE is its Go-template equivalent, with the
    template's default system prompt as SYSTEM; otherwise Ollama falls back to the chat template embedded in
    the GGUF (tokenizer.chat_template)."""
    lines = ["# Ollama Modelfile written by Compression Studio: ollama create NAME -f Modelfile",
             f"FROM ./{gguf_name}", ""]
    if template and "<|im_start|>" in template:
        lines += ['TEMPLATE """{{- if .System }}<|im_start|>system', "{{ .System }}<|im_end|>",
                  '{{ end }}{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}',
                  "{{ .Content }}<|im_end|>", '{{ end }}{{- end }}<|im_start|>assistant', '"""']
        if default_system:
            lines.append(f'SYSTEM """{default_system}"""')
        lines.append("")
    elif template:
        lines += ["# TEMPLATE: none here; Ollama reads the chat template embedded in the GGUF.", ""]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"
