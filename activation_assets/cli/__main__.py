import sys

from activation_assets.cli.commands import main

sys.exit(main())
