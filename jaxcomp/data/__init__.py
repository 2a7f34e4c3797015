"""Input pipelines (tfds and local real data). See `get_info`, `train_iterator`, `eval_iterator`."""
