from rsqair_bench.cli import main

raise SystemExit(main())
