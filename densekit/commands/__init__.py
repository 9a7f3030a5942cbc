"""One module per ``densekit`` subcommand: ``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args)``."""
