"""The words a RunSpec's named choices take, imported by the rules (``kdray.checks``) and by
the code that acts on them (``kdray.data.stream``'s augmentations), so that neither imports
the other: this module imports nothing of kdray."""

ROLES = ("teacher", "nds", "ds")  # the order every table lists them in
DS_ONLY = ("teacher_arch", "temperature", "alpha")  # set on a DS spec, and on no other
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "linear")
AUGMENTATIONS = ("none", "crop_flip", "random_resized_crop_flip")
