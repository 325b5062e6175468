import sys
from keditlab.cli import main

sys.exit(main())
