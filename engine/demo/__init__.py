"""The demo kit: a real (trimmed) Qwen2.5 tokenizer, tiny Qwen2 teacher/student and generated task data.

``ensure_demo_kit()`` (in :mod:`engine.demo.kit`) builds it once under the user data directory so the whole
pipeline runs offline on a laptop CPU through the same code path as real Qwen models.
"""
