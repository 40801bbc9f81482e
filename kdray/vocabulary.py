"""The words a RunSpec's named choices take, imported by the rules (``kdray.checks``) and by
the code that acts on them (``kdray.data.stream``'s augmentations), so that neither imports
the other: this module imports nothing of kdray."""

ROLES = ("teacher", "nds", "control", "ds")  # the order every table lists them in
DS_ONLY = ("teacher_arch", "temperature", "alpha")  # set on a DS spec; on others only below
# the DS_ONLY fields a role sets (the others it leaves None): a control is one per alpha
ROLE_FIELDS = {"teacher": (), "nds": (), "control": ("alpha",), "ds": DS_ONLY}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "linear")
AUGMENTATIONS = ("none", "crop_flip", "random_resized_crop_flip")
