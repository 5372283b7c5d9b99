"""The training stage: one job (model x seed) trained or resumed in its directory. `loop` is the
loop itself; the schedule, data windows and validation are small pure modules beside it, and every
side effect of a run (train_log.csv, TensorBoard, the progress bar, status.json, checkpoints) is an
observer of the loop (`observers`). A peer of `evaluation`: neither imports the other."""
