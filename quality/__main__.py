from quality.run import main

raise SystemExit(main())
