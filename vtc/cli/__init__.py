"""The `vtc` command line: one module per verb; modules parse and hand over to vtc.stages."""
