"""Task data for training and evaluation (the heavy half; the light half is :mod:`engine.contract.data`).

- :mod:`engine.training_data.loading` — ``load_records(spec)``: canonical records from a preset, a hub data set or a
file.
- :mod:`engine.training_data.splits` — ``split_records(records, spec)``: train / validation / test.
- :mod:`engine.training_data.formatting` — prompts and tokenized SFT examples (loss on response tokens only).
"""
