"""Compression Studio's engine: distillation, GRPO, quantization, evaluation and chat, driven by run specs.

Only ``engine.spec``, ``engine.protocol`` and ``engine.runs`` (and ``engine.data.preview``) are light enough for
the studio to import; everything else pulls in torch.
"""
__version__ = "0.1.0"
