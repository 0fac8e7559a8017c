from strait_server.cli import main

raise SystemExit(main())
