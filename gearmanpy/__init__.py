"""gearmanpy: a Gearman job server, client and worker library built on Twisted."""

__version__ = "0.1.0"

__all__ = ["__version__"]
