"""Training recipes, one module per method: its stages and the command-line options they own."""
