"""One module per notebook: its config and the functions returning its data, figures and artefacts."""
