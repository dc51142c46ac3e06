from otel_matomo.cli import main

raise SystemExit(main())
