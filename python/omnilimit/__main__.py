from omnilimit.cli import main

raise SystemExit(main())
