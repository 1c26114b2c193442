import sys

from vms_bench.cli import main

sys.exit(main())
