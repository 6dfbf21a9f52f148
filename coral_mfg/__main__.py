from coral_mfg.cli import main

raise SystemExit(main())
