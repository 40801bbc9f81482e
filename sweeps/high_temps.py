"""The appendix's extension: T = 20, 30, 40 wherever the paper's tables stop at T = 10.

    ray submit cluster/aws.yaml sweeps/high_temps.py -- --store s3://BUCKET/kdray
    python sweeps/high_temps.py --dry-run        # the plan; nothing trains

sweeps/full_paper.py's experiments at the high temperatures: on its store only the new DS
train, replaying the teacher logits the study recorded. Every flag and KDRAY_* variable:
docs/cli.md.
"""

import sys

from kdray.sweep.cli import Script
from kdray.sweep.paper import EXPERIMENTS, high_temperature_extension

SCRIPT = Script("sweeps/high_temps.py", high_temperature_extension(EXPERIMENTS),
                description=__doc__)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
