"""`python -m vtc` is the `vtc` command."""

from vtc.cli.app import main

main()
