"""Orchestration of a whole suite: the suite-level checks and the job list (`suite`), `run` with its
executors and re-evaluation of stale jobs (`run`), the live display (`live_progress`), what a suite
will cost (`cost`, `run --dry-run`) and throughput measurement (`bench`). The top layer beside `cli`:
it calls the stages and the report, and nothing below imports it."""
