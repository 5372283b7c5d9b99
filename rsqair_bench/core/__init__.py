"""Foundations every other layer may import: atomic writes and the per-directory lock (`io`), seeds
of random streams (`seeding`), device names and memory figures (`device`), when to draw progress bars
(`progress`), whether torch.compile's C++ compiler works (`compiler`),
which inductor cache folder a process uses (`inductor_cache`), the training precision's autocast
and float32 upcast and what a device offers for bf16 (`precision`), the guard that makes an early
exit non-zero (`exit_guard`) and a job's `status.json` (`job_status`, written by training and the
runner, read by the live display). Nothing here imports a layer above; only `errors` sits beside it."""
