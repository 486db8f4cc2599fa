"""4-bit post-training quantization (bitsandbytes NF4/FP4) and its before/after report."""
