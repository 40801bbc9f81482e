"""Training, without Ray: the loop (``loop``: a cohort of students in lockstep), what one step
computes (``step``: the KD loss of paper eq. 6, augmentation, schedule, optimiser), its
capture in a CUDA graph (``graph``), CUDA settings per process (``gpu``) and the trainer's
saved state (``state``). Nothing here imports Ray: the same code runs in a test, a benchmark
or a Ray Tune trial."""
