"""The appendix's extension: T = 20, 30, 40 wherever the paper's tables stop at T = 10.

    ray submit cluster/aws.yaml sweeps/high_temps.py -- --store s3://BUCKET/kdray

Same experiment list as ``sweeps/full_paper.py`` (``kdray/sweep/paper.py``); teachers and
non-distilled students are the same runs, so on a store where the full study is complete
only the new distilled students train; a cohort whose teacher logits the study recorded
replays them instead of running its teacher (``kdray/trial/teacher_logits.py``: tables up to
``$KDRAY_TEACHER_LOGITS_MB``, default 1024 MiB).
"""

import sys

from kdray.sweep.cli import sweep_main
from kdray.sweep.paper import EXPERIMENTS, high_temperature_extension

if __name__ == "__main__":
    sys.exit(sweep_main(high_temperature_extension(EXPERIMENTS), description=__doc__))
