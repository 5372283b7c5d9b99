"""Everything written from the files the stages left behind (metrics.json, train_log.csv,
rollout_*.npz): `write` (`write_report` and the `report` command) writes what the others
compute: the tables (`tables`, with `dynamics` and `relations` for the research tables),
significance tests and their table (`significance`, `significance_table`), failed jobs' rows
(`failures`), figures and GIFs (`figures`, `animation`), the comparison of two result directories
(`compare`) and Markdown/LaTeX text formatting (`textfmt`). Reads results; never trains or scores."""
