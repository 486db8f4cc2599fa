"""Running a spec: the stage pipeline, multi-process launch, what a recipe is handed, heartbeats and TensorBoard
logging."""
