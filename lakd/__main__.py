from lakd.cli import main

raise SystemExit(main())
