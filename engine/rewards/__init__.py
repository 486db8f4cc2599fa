"""GRPO reward functions and the kernel-enforced sandbox that runs model-written code for the correctness reward."""
