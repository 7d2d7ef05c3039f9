"""Top layer: worker pool, notebook execution, book pages, make reproduce, the command line."""
