"""gearmanpy test suite."""
