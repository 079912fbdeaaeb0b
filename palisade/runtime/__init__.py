"""Runtime plumbing shared by the daemons: settings, lifecycle, logging, metrics."""
