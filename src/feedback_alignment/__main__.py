from feedback_alignment.cli import main

raise SystemExit(main())
