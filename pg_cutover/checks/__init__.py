"""The checks that stand between a run and production: parity, schema equivalence, the baseline, writes paused, the window."""
