"""Every experiment of "What's Left After Distillation?", five seeds each: 850 runs.

    ray submit cluster/aws.yaml sweeps/full_paper.py -- --store s3://BUCKET/kdray
    python sweeps/full_paper.py --dry-run        # the plan and GPU-hours; nothing trains
    python sweeps/full_paper.py --smoke-test     # the same path on CPU, tiny data

The paper's tables (kdray/sweep/paper.py); complete runs are skipped, so --temperatures or
--seeds extend a finished study; then the analysis's tables ({store}/analysis/). Every
flag and KDRAY_* variable: docs/cli.md.
"""

import sys

from kdray.sweep.cli import Script
from kdray.sweep.paper import EXPERIMENTS

SCRIPT = Script("sweeps/full_paper.py", EXPERIMENTS, description=__doc__)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
