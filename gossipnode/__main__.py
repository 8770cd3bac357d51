import sys
from gossipnode.cli.entry import main
sys.exit(main())
