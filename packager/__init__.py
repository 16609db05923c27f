"""request-pack: hermetic packager, runner and verifier for ML benchmark artifacts."""

__version__ = "0.1.0"
