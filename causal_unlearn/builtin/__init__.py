"""The built-in model's recipe: how `olmo-tiny-bios` is trained from the bios world
(`python -m causal_unlearn.builtin.train --out FOLDER`)."""
