from strait_client.cli import main

raise SystemExit(main())
