"""The evaluation stage: one checkpoint scored on one data split (`evaluate`), with the model's own
pixel likelihood (`scores`), the reference predictors (`references`), object-ball matching
(`matching`), the per-split accumulators of the last two (`dynamics`), and the prior's error taken apart
at frame T and scored one step ahead at every frame (`prior_error`). A peer of `training`:
neither imports the other; what both need (checkpoints, registry, data) sits below them."""
