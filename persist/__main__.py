from persist.cli import main

raise SystemExit(main())
