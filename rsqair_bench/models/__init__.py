"""SQAIR and its parts (`sqair`, `air`, `stn`, `priors`, `objective`, `image_encoder`,
`compile_passes`) and the one extension point of the model, `relation.Relation`, with the attention
block the attention-based relations share (`attention`) and the knocked-out relation of the
knock-out evaluation (`knockout`). Knows nothing of training, evaluation or files."""
