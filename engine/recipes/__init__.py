"""Stage recipes: one file per stage kind, each with ``run_stage(ctx) -> StageResult``."""
