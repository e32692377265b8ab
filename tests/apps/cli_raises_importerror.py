"""A module that raises ImportError itself while being imported."""
raise ImportError("cli_raises_importerror refuses to load: missing native library")
