"""Models and memory: loading/saving (hub ids, folders, GGUF, demo kit), GGUF unpacking, memory estimates and the
per-stage memory plan, model cards."""
