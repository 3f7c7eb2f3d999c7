"""persist inside a user's own training loop: Meter (measure it), reuse (K uses of each batch), replay (ideal
loading). Public through persist.Meter, persist.reuse, persist.replay."""
