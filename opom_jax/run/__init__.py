"""Learning and using masks for a data set: config and its validation, batching over a
device mesh, orbax checkpoints and resume, settings-keyed artefacts, and the generate /
evaluate / protect jobs the launchers call."""
