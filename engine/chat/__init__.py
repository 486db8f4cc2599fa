"""The chat service behind the arena: requests checked before any work, models loaded once, answers streamed."""
