from persist.cli.main import main

raise SystemExit(main())
