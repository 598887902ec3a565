"""Entry points: the `pluralign` command line, training jobs and the job runner."""
