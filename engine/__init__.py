"""Compression Studio's engine: distillation, GRPO, quantization, evaluation and chat, driven by run specs.

Only ``engine.contract.spec``, ``engine.contract.protocol`` and ``engine.contract.runs`` (and
``engine.contract.data.preview``) are light enough for
the studio to import; everything else pulls in torch.
"""
__version__ = "0.1.0"
