import sys

from activation_assets.cli.main import main

sys.exit(main())
