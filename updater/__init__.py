"""The pure update engine: models, the status machine, strategies, instance evaluation and the
pulse monitor. No I/O, no threads, no clocks: callers pass `now` in milliseconds."""
