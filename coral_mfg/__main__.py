from coral_mfg.commands.cli import main

raise SystemExit(main())
