"""`python -m moorage.jobs.finetune`, the form torchrun starts."""

import sys

from moorage.jobs.finetune import main

sys.exit(main())
