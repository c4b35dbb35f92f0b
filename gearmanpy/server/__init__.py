"""The Gearman job server: state, protocols, admin commands and the service."""
