"""What every part of the engine runs inside: the run context and its errors, heartbeats, and the ranks of a
multi-process run."""
