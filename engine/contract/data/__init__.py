"""The data half of the contract: presets, canonical records, local file readers and the preview (stdlib only)."""
