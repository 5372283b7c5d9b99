"""The relations compared by the benchmark, one file each; this folder installs as
`rsqair_bench.baselines` (pyproject's package-dir mapping), and `registry.discover` imports every
module in it. A baseline imports only from rsqair_bench, never another baseline."""
