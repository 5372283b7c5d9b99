"""The data layer: bouncing balls simulated and rendered (`physics`, `render`), bounds checked
before allocating (`limits`), R-NEM-layout HDF5 files written, validated and checksummed (`h5`), the
torch `Dataset` (`loader`), the `data generate/inspect` commands and `ensure_dataset` (`commands`),
and the true ball states that the oracle and matching read (`ball_states`). Imports only the
foundations and `config`."""
