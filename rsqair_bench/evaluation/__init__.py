"""The evaluation stage: one checkpoint scored on one data split (`evaluate`), with the model's own
pixel likelihood (`scores`), the reference predictors (`references`), object-ball matching
(`matching`) and the per-split accumulators of the last two (`dynamics`). A peer of `training`:
neither imports the other; what both need (checkpoints, registry, data) sits below them."""
